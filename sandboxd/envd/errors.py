"""One mapping from the jail's ``FsError`` codes to Connect codes and HTTP statuses.

The SDK branches on these: ``exists()`` is False on ``not_found``, ``make_dir()`` is False on
``already_exists``, ``files.read`` raises ``FileNotFoundException`` on HTTP 404 and
``NotEnoughSpaceException`` on 507.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from sandboxd.jail import FsError, JailError

# What a jail call may raise: a file/process error, or the sandbox itself failing.
JAIL_ERRORS = (FsError, JailError)

# The one account inside a sandbox (the jail runs everything as it; there is no root).
SANDBOX_USER = "user"


def wrong_user(user: str, what: str) -> str | None:
    """Why a request for ``user`` is refused, or ``None`` when it is the sandbox's account.

    Asking for another account (``root``) is refused rather than silently run as ``user``,
    which would only fail later and more confusingly (permission errors).
    """
    if user == SANDBOX_USER:
        return None
    return f"{what} run as {SANDBOX_USER!r} in a sandboxd sandbox, not {user!r}"


class CodedError(Protocol):
    """What ``FsError`` and ``JailError`` look like to envd: a stable code and a message."""

    code: str
    message: str


# FsError code -> (Connect code, HTTP status for the /files endpoints).
_MAPPING: dict[str, tuple[Code, int]] = {
    "not_found": (Code.NOT_FOUND, 404),
    "already_exists": (Code.ALREADY_EXISTS, 409),
    "invalid_argument": (Code.INVALID_ARGUMENT, 400),
    "permission_denied": (Code.PERMISSION_DENIED, 403),
    # Over the files API this is a full disk or workspace quota: E2B's 507.
    "resource_exhausted": (Code.RESOURCE_EXHAUSTED, 507),
    "internal": (Code.INTERNAL, 500),
    # JailError: the sandbox itself failed (its agent died). UNAVAILABLE makes the SDK probe
    # the sandbox's health, and 502 is what E2B's proxy answers for a sandbox it cannot reach.
    "jail_failed": (Code.UNAVAILABLE, 502),
}


def connect_error(error: CodedError) -> ConnectError:
    """The Connect error the SDK expects for a jail error (unknown codes are internal)."""
    code, _status = _MAPPING.get(error.code, _MAPPING["internal"])
    return ConnectError(code, error.message)


def http_error(error: CodedError) -> web.Response:
    """The ``/files`` error response: envd's JSON ``{"code": <status>, "message": …}``."""
    _code, status = _MAPPING.get(error.code, _MAPPING["internal"])
    return files_error(status, error.message)


def files_error(status: int, message: str) -> web.Response:
    """A ``/files`` error body as envd sends it (the SDK reads ``message``)."""
    return web.json_response({"code": status, "message": message}, status=status)
