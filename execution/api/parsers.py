"""JSON from clients, bounded in depth: REST bodies, tool-call arguments, websocket frames.

Python's json module recurses once per nesting level, so a body of 100 000 `[` raises
RecursionError, which DRF does not catch (a 500). Every JSON text a client sends is read
through `loads_bounded`: nesting beyond MAX_JSON_DEPTH (far deeper than any request of this
API needs) is a ValueError, which each entry point answers as its usual "malformed" 400.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Containers inside containers; the deepest request of the API (a tool call's arguments,
# an agent's tool list) is 3.
MAX_JSON_DEPTH = 64


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` (parsed JSON) nests containers deeper than `limit` (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def loads_bounded(text: str | bytes) -> Any:
    """`json.loads(text)`, refusing nesting deeper than MAX_JSON_DEPTH with ValueError."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    if json_depth_exceeds(value):
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return value


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with the depth bound: too deep is a 400 `malformed_request`."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return loads_bounded(stream.read().decode(encoding))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
