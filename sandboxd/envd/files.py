"""envd's ``/files`` endpoint: download (GET) and upload (POST) whole files.

Uploads are ``multipart/form-data`` (one or more ``file`` parts; a part's filename is its
target path, or the ``path`` query parameter names it when there is one part) or an
``application/octet-stream`` body written to ``path``. Both answer 200 with
``[{"name", "type": "file", "path"}]``. Errors are envd's JSON ``{"code", "message"}``.
Files travel whole through memory, so both directions are capped (``max_bytes``).
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from typing import TYPE_CHECKING

from aiohttp import BodyPartReader, web
from aiohttp.multipart import parse_content_disposition

from sandboxd.envd.errors import (
    JAIL_ERRORS,
    SANDBOX_USER,
    files_error,
    http_error,
    wrong_user,
)

if TYPE_CHECKING:
    from sandboxd.jail import Entry, Jail

_READ_CHUNK = 1 << 16
_QUOTED_FILENAME = re.compile(r'filename="([^"]*)"')
# The HTML5 multipart escapes httpx (the SDK's multipart encoder) applies to a filename.
_HTML5_ESCAPE = re.compile(r"%(22|[01][0-9A-F])")


def part_path(part: BodyPartReader) -> str:
    """The target path a multipart part names, exactly as the client sent it.

    ``BodyPartReader.filename`` strips a leading ``/`` (it treats names as untrusted local
    file names), but here the name is the absolute path inside the sandbox and the jail does
    the confining, so the raw header value is used.
    """
    header = part.headers.get("Content-Disposition", "")
    _kind, params = parse_content_disposition(header)
    if "filename*" in params:
        return params["filename*"]
    match = _QUOTED_FILENAME.search(header)
    if match:
        raw = _HTML5_ESCAPE.sub(lambda m: urllib.parse.unquote("%" + m.group(1)), match.group(1))
        return raw.replace("\\\\", "\\")
    return params.get("filename", "")


class _TooLarge(Exception):
    """An upload exceeded the size cap."""


def _user_error(request: web.Request) -> web.Response | None:
    """A 403 when the request asks for another account than the sandbox's."""
    user = request.query.get("username") or request.query.get("user") or SANDBOX_USER
    refusal = wrong_user(user, "file operations")
    return files_error(403, refusal) if refusal else None


def _written(entry: Entry) -> dict[str, str]:
    return {"name": entry.name, "type": "file", "path": entry.path}


async def download(request: web.Request, jail: Jail, *, max_bytes: int) -> web.StreamResponse:
    """``GET /files?path=P``: the file's bytes, or 404/400/403 as JSON."""
    refused = _user_error(request)
    if refused is not None:
        return refused
    path = request.query.get("path")
    if not path:
        return files_error(400, "the path query parameter is required")
    try:
        data = await jail.read_file(path, max_bytes=max_bytes)
    except JAIL_ERRORS as error:
        if error.code == "resource_exhausted":
            return files_error(413, f"{path} is larger than the {max_bytes} byte limit")
        return http_error(error)
    response = web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{posixpath.basename(path)}"',
        },
    )
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


async def _read_limited(part: BodyPartReader | web.Request, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if isinstance(part, web.Request):
            chunk = await part.content.read(_READ_CHUNK)
        else:
            chunk = await part.read_chunk(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise _TooLarge
        chunks.append(chunk)


async def upload(request: web.Request, jail: Jail, *, max_bytes: int) -> web.Response:
    """``POST /files``: write every uploaded file; 200 with what was written."""
    refused = _user_error(request)
    if refused is not None:
        return refused
    query_path = request.query.get("path")
    written: list[dict[str, str]] = []
    try:
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            parts: list[tuple[str, bytes]] = []
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    return files_error(400, "nested multipart bodies are not supported")
                target = part_path(part)
                parts.append((target, await _read_limited(part, max_bytes)))
            if not parts:
                return files_error(400, "the multipart body holds no file part")
            if query_path and len(parts) == 1:
                parts = [(query_path, parts[0][1])]
            for target, data in parts:
                if not target:
                    return files_error(400, "every file part needs a filename (its path)")
                written.append(_written(await jail.write_file(target, data)))
        elif request.content_type == "application/octet-stream":
            if not query_path:
                return files_error(400, "the path query parameter is required")
            data = await _read_limited(request, max_bytes)
            written.append(_written(await jail.write_file(query_path, data)))
        else:
            return files_error(
                400,
                "send multipart/form-data or application/octet-stream, not "
                f"{request.content_type!r}",
            )
    except _TooLarge:
        return files_error(413, f"an uploaded file is larger than the {max_bytes} byte limit")
    except JAIL_ERRORS as error:
        return http_error(error)
    return web.json_response(written)
