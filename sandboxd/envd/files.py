"""envd's ``/files`` endpoint: download (GET) and upload (POST) whole files.

Uploads are ``multipart/form-data`` (one or more ``file`` parts; a part's filename is its
target path, or the ``path`` query parameter names it when there is one part) or an
``application/octet-stream`` body written to ``path``. Both answer 200 with
``[{"name", "type": "file", "path"}]``. Errors are envd's JSON ``{"code", "message"}``.
Both directions are capped (``max_bytes``). Uploads are streamed into the sandbox part by
part (never held whole); downloads travel whole through memory. With a ``path`` query
parameter a multipart body may hold one part only, written there: a signed upload URL signs
that path and no other.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import urllib.parse
from collections.abc import AsyncIterator
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


def attachment_header(name: str) -> str:
    """``Content-Disposition`` for a download of `name` (RFC 6266): an ASCII fallback with
    every byte a header could misread (CR, LF, quotes, backslashes, non-ASCII) replaced by
    ``_``, and the exact name percent-encoded in ``filename*``. A file name is the sandbox's
    choice: raw, a CR/LF in it would end the header and break (or forge) the response."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    exact = urllib.parse.quote(name, safe="", errors="surrogateescape")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"


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
        headers={"Content-Disposition": attachment_header(posixpath.basename(path))},
    )
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


async def _limited_chunks(
    source: BodyPartReader | web.Request, max_bytes: int
) -> AsyncIterator[bytes]:
    """The body (or one part of it) chunk by chunk; _TooLarge past `max_bytes`."""
    total = 0
    while True:
        if isinstance(source, web.Request):
            chunk = await source.content.read(_READ_CHUNK)
        else:
            chunk = await source.read_chunk(_READ_CHUNK)
        if not chunk:
            return
        total += len(chunk)
        if total > max_bytes:
            raise _TooLarge
        yield chunk


async def _write_streamed(
    jail: Jail, target: str, source: BodyPartReader | web.Request, max_bytes: int
) -> dict[str, str]:
    """Stream one uploaded file into the sandbox (never held whole: bounded memory per
    upload); a file over the cap is removed again, so no truncated file is left behind."""
    try:
        entry = await jail.write_stream(target, _limited_chunks(source, max_bytes))
    except _TooLarge:
        with contextlib.suppress(*JAIL_ERRORS):
            await jail.remove(target)
        raise
    return _written(entry)


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
            count = 0
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    return files_error(400, "nested multipart bodies are not supported")
                count += 1
                if query_path is not None:
                    # The path query names the one file this request writes. A signed URL
                    # signs exactly that path, so no other part may pick another one.
                    if count > 1:
                        return files_error(
                            400, "with a path query parameter the body holds one file part"
                        )
                    target = query_path
                else:
                    target = part_path(part)
                if not target:
                    return files_error(400, "every file part needs a filename (its path)")
                written.append(await _write_streamed(jail, target, part, max_bytes))
            if not count:
                return files_error(400, "the multipart body holds no file part")
        elif request.content_type == "application/octet-stream":
            if not query_path:
                return files_error(400, "the path query parameter is required")
            written.append(await _write_streamed(jail, query_path, request, max_bytes))
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
