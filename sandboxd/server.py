"""sandboxd's HTTP server: the E2B control plane and every sandbox behind one URL.

A request carrying ``E2b-Sandbox-Id`` is for a sandbox: ``E2b-Sandbox-Port`` 49983 goes to
its envd (``sandboxd.envd``), 49999 to its code interpreter (``sandboxd.interpreter``). Any
other request is a control-plane call and needs ``X-API-KEY``.

Authentication, as the SDK sends it:

* control plane: ``X-API-KEY`` equal to the configured key → else 401;
* envd: ``X-Access-Token`` equal to the sandbox's ``envdAccessToken`` (or, on ``/files``, a
  valid signed URL made with that token) → else 401;
* code interpreter: ``E2B-Traffic-Access-Token`` equal to the sandbox's
  ``trafficAccessToken`` (the SDK sends it on every interpreter call, but sends
  ``X-Access-Token`` only on ``/execute``), or ``X-Access-Token`` → else 401.

Every comparison is constant-time. Errors use E2B's body ``{"code": <status>, "message"}``;
an unknown sandbox on the sandbox routes is the 502 "…was not found" that E2B's proxy sends,
which the SDK turns into ``SandboxNotRunningException``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import signal
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from sandboxd import ENVD_VERSION, __version__, prometheus
from sandboxd.config import MIB, Config
from sandboxd.control import ControlError, ControlPlane, Sandbox
from sandboxd.envd import ENVD_PORT
from sandboxd.pause import PausedRecord
from sandboxd.watchdog import LoopWatchdog

log = logging.getLogger(__name__)

INTERPRETER_PORT = 49999
CLIENT_ID = "sandboxd"
LIST_LIMIT_MAX = 100
MAX_METRICS_IDS = 100  # sandbox ids one /sandboxes/metrics call may ask about
JSON_BODY_MAX_BYTES = 16 * MIB

CONTROL_PLANE: web.AppKey[ControlPlane] = web.AppKey("control_plane", ControlPlane)
CONFIG: web.AppKey[Config] = web.AppKey("config", Config)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    """E2B's error body with the matching status."""
    return web.json_response({"code": status, "message": message, **extra}, status=status)


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- control plane ---------------------------------------------------------------------------


def created_body(sandbox: Sandbox) -> dict[str, Any]:
    """The ``Sandbox`` model the SDK parses after create and connect."""
    return {
        "templateID": sandbox.template_id,
        "sandboxID": sandbox.sandbox_id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": sandbox.envd_access_token,
        "trafficAccessToken": sandbox.traffic_access_token,
        "domain": None,
    }


def listed_body(sandbox: Sandbox | PausedRecord, plane: ControlPlane) -> dict[str, Any]:
    """The ``ListedSandbox`` model (also the base of ``SandboxDetail``)."""
    limits = plane.limits
    return {
        "templateID": sandbox.template_id,
        "sandboxID": sandbox.sandbox_id,
        "clientID": CLIENT_ID,
        "startedAt": _iso(sandbox.started_at),
        "endAt": _iso(sandbox.end_at),
        "cpuCount": max(1, round(limits.cpus)),
        "memoryMB": limits.memory_bytes // MIB,
        "diskSizeMB": limits.workspace_bytes // MIB,
        "state": "paused" if isinstance(sandbox, PausedRecord) else "running",
        "envdVersion": ENVD_VERSION,
        "metadata": sandbox.metadata,
    }


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's stack (a hostile body).
        raise ControlError(400, "the request body must be JSON, not nested too deeply") from None
    if not isinstance(body, dict):
        raise ControlError(400, "the request body must be a JSON object")
    return body


def _string_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ControlError(400, f"{key} must be an object of strings")
    return value


def _timeout(body: dict[str, Any], *, required: bool = False) -> int | None:
    value = body.get("timeout")
    if value is None:
        if required:
            raise ControlError(400, "timeout is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ControlError(400, "timeout must be an integer number of seconds")
    return value


async def create_sandbox(request: web.Request) -> web.Response:
    """``POST /v2/sandboxes`` (and ``/sandboxes``): 201 with the new sandbox and its tokens.

    ``autoPause`` pauses the sandbox at its timeout instead of killing it. ``network``,
    ``allow_internet_access``, ``mcp``, ``volumeMounts`` and the like are accepted and
    ignored: its network policy is fixed (no internet; package indexes only, through the
    egress proxy), and it has no volumes.
    """
    body = await _json_body(request)
    auto_pause = body.get("autoPause", False)
    if not isinstance(auto_pause, bool):
        raise ControlError(400, "autoPause must be a boolean")
    template_id = body.get("templateID") or "base"
    if not isinstance(template_id, str):
        raise ControlError(400, "templateID must be a string")
    sandbox = await request.app[CONTROL_PLANE].create(
        template_id=template_id,
        timeout_seconds=_timeout(body),
        metadata=_string_map(body, "metadata"),
        env_vars=_string_map(body, "envVars"),
        auto_pause=auto_pause,
    )
    return web.json_response(created_body(sandbox), status=201)


async def connect_sandbox(request: web.Request) -> web.Response:
    """``POST /v2/sandboxes/{id}/connect``: 200 with the sandbox's tokens; 404 if unknown."""
    body = await _json_body(request)
    plane, sandbox_id = request.app[CONTROL_PLANE], request.match_info["sandbox_id"]
    await plane.settled(sandbox_id)
    if plane.is_paused(sandbox_id):
        sandbox = await plane.resume(sandbox_id, _timeout(body))
        return web.json_response(created_body(sandbox), status=201)
    sandbox = plane.connect(sandbox_id, _timeout(body))
    return web.json_response(created_body(sandbox), status=200)


async def pause_sandbox(request: web.Request) -> web.Response:
    """``POST /sandboxes/{id}/pause``: 204; 409 when paused already, 404 when unknown."""
    await request.app[CONTROL_PLANE].pause(request.match_info["sandbox_id"])
    return web.Response(status=204)


async def resume_sandbox(request: web.Request) -> web.Response:
    """``POST /sandboxes/{id}/resume`` (E2B's older route): 201, as connect to a paused one."""
    body = await _json_body(request)
    sandbox = await request.app[CONTROL_PLANE].resume(
        request.match_info["sandbox_id"], _timeout(body)
    )
    return web.json_response(created_body(sandbox), status=201)


async def set_timeout(request: web.Request) -> web.Response:
    """``POST /sandboxes/{id}/timeout``: 204; the sandbox now dies ``timeout`` s from now."""
    body = await _json_body(request)
    timeout = _timeout(body, required=True)
    assert timeout is not None  # required=True raised otherwise
    request.app[CONTROL_PLANE].set_timeout(request.match_info["sandbox_id"], timeout)
    return web.Response(status=204)


async def refresh_sandbox(request: web.Request) -> web.Response:
    """``POST /sandboxes/{id}/refreshes`` ``{"duration"}``: keep the sandbox alive longer."""
    body = await _json_body(request)
    duration = body.get("duration")
    request.app[CONTROL_PLANE].connect(
        request.match_info["sandbox_id"], duration if isinstance(duration, int) else None
    )
    return web.Response(status=204)


async def kill_sandbox(request: web.Request) -> web.Response:
    """``DELETE /sandboxes/{id}``: 204, or 404 (the SDK's ``kill()`` then returns False)."""
    sandbox_id = request.match_info["sandbox_id"]
    if not await request.app[CONTROL_PLANE].kill(sandbox_id):
        raise ControlError(404, f"sandbox {sandbox_id} not found")
    return web.Response(status=204)


async def get_sandbox(request: web.Request) -> web.Response:
    """``GET /sandboxes/{id}``: the ``SandboxDetail`` model; 404 if unknown."""
    plane = request.app[CONTROL_PLANE]
    await plane.settled(request.match_info["sandbox_id"])
    sandbox: Sandbox | PausedRecord | None = plane.get(request.match_info["sandbox_id"])
    if sandbox is None:
        sandbox = plane.paused(request.match_info["sandbox_id"])
    if sandbox is None:
        raise ControlError(404, f"sandbox {request.match_info['sandbox_id']} not found")
    detail = listed_body(sandbox, plane)
    detail["envdAccessToken"] = sandbox.envd_access_token
    detail["domain"] = None
    return web.json_response(detail)


def _metadata_filter(raw: str | None) -> dict[str, str] | None:
    """The SDK sends ``metadata`` as a URL-encoded query of percent-quoted pairs."""
    if not raw:
        return None
    return {
        urllib.parse.unquote(key): urllib.parse.unquote(value)
        for key, value in urllib.parse.parse_qsl(raw, keep_blank_values=True)
    }


def _list_params(request: web.Request) -> tuple[int, int]:
    try:
        limit = int(request.query.get("limit", LIST_LIMIT_MAX))
        offset = int(request.query.get("nextToken") or 0)
    except ValueError:
        raise ControlError(400, "limit and nextToken must be integers") from None
    if not 1 <= limit <= LIST_LIMIT_MAX or offset < 0:
        raise ControlError(400, f"limit must be 1-{LIST_LIMIT_MAX} and nextToken non-negative")
    return limit, offset


async def list_sandboxes(request: web.Request) -> web.Response:
    """``GET /v2/sandboxes`` (and ``/sandboxes``): running sandboxes matching the filters.

    Pages by ``limit``; the next page's token comes back in ``x-next-token``.
    """
    plane = request.app[CONTROL_PLANE]
    states = request.query.get("state")
    started_after = request.query.get("startedAfter")
    order = request.query.get("order", "desc")  # E2B lists newest first
    if order not in {"asc", "desc"}:
        raise ControlError(400, "order must be asc or desc")
    try:
        after = datetime.fromisoformat(started_after) if started_after else None
    except ValueError:
        raise ControlError(400, "startedAfter must be an ISO 8601 time") from None
    if after is not None and after.tzinfo is None:
        after = after.astimezone()
    found = plane.query(
        metadata=_metadata_filter(request.query.get("metadata")),
        states=states.split(",") if states else None,
        template_id=request.query.get("template") or None,
        started_after=after,
        descending=order == "desc",
    )
    limit, offset = _list_params(request)
    page = found[offset : offset + limit]
    headers = {}
    if offset + limit < len(found):
        headers["x-next-token"] = str(offset + limit)
    return web.json_response([listed_body(s, plane) for s in page], headers=headers)


def _unix_time(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.lstrip("-").isdigit() or len(value) > 12:
        raise ControlError(400, f"{name} must be a Unix time in seconds")
    return datetime.fromtimestamp(int(value), UTC)


async def sandbox_metrics(request: web.Request) -> web.Response:
    """``GET /sandboxes/{id}/metrics?start=&end=``: the samples in that window, oldest first
    (see sandboxd.metrics)."""
    sandbox = request.app[CONTROL_PLANE].get(request.match_info["sandbox_id"])
    if sandbox is None:
        raise ControlError(404, f"sandbox {request.match_info['sandbox_id']} not found")
    start, end = _unix_time(request, "start"), _unix_time(request, "end")
    if end is not None:
        end += timedelta(seconds=1)  # second precision: the whole end second is included
    return web.json_response([s.body() for s in sandbox.metrics.samples(start, end)])


async def sandboxes_metrics(request: web.Request) -> web.Response:
    """``GET /sandboxes/metrics?sandbox_ids=a,b``: each listed live sandbox's latest sample."""
    wanted = [i for i in request.query.get("sandbox_ids", "").split(",") if i]
    if len(wanted) > MAX_METRICS_IDS:
        raise ControlError(400, f"at most {MAX_METRICS_IDS} sandbox_ids at once")
    plane = request.app[CONTROL_PLANE]
    found = {}
    for sandbox_id in wanted:
        sandbox = plane.get(sandbox_id)
        latest = sandbox.metrics.latest() if sandbox is not None else None
        if latest is not None:
            found[sandbox_id] = latest.body()
    return web.json_response({"sandboxes": found})


async def not_supported(request: web.Request) -> web.Response:
    """Snapshots, forks, sandbox logs and network updates: sandboxd has none of these (README,
    "What sandboxd does not do"); say so instead of pretending."""
    return error_response(
        501,
        f"sandboxd does not support {request.method} {request.path} "
        "(no snapshots, forks, sandbox logs or network updates)",
    )


async def server_health(request: web.Request) -> web.Response:
    """``GET /health`` without a sandbox header: the server is up. No key is needed, so it
    says nothing about the sandboxes; with a valid ``X-API-KEY`` it adds their counts."""
    body: dict[str, Any] = {"status": "ok", "version": __version__}
    if tokens_equal(request.headers.get("X-API-KEY"), request.app[CONFIG].api_key):
        plane = request.app[CONTROL_PLANE]
        body["sandboxes"] = len(plane.live())
        body["pool_ready"] = plane.pool_ready()
    return web.json_response(body)


# --- sandboxes -------------------------------------------------------------------------------


def _signature_check(request: web.Request, sandbox: Sandbox) -> str | None:
    """For a ``/files`` URL signed by the SDK's ``download_url``/``upload_url`` (v1
    signature: sha256 of ``path:operation:user:token[:expiration]``): ``"valid"``,
    ``"expired"`` (signed with this sandbox's token, but past its expiration), or ``None``
    (no signature, or not this sandbox's)."""
    signature = request.query.get("signature")
    path = request.query.get("path")
    if not signature or path is None or request.path != "/files":
        return None
    operation = "read" if request.method == "GET" else "write"
    user = request.query.get("username", "")
    expiration = request.query.get("signature_expiration")
    raw = f"{path}:{operation}:{user}:{sandbox.envd_access_token}"
    if expiration is not None:
        if not expiration.lstrip("-").isascii() or not expiration.lstrip("-").isdigit():
            return None
        raw += f":{expiration}"
    digest = base64.b64encode(hashlib.sha256(raw.encode("utf-8")).digest()).rstrip(b"=")
    if not tokens_equal(signature, "v1_" + digest.decode("ascii")):
        return None
    if expiration is not None and int(expiration) < time.time():
        return "expired"
    return "valid"


def signed_url_valid(request: web.Request, sandbox: Sandbox) -> bool:
    """Whether the request is a valid, unexpired signed ``/files`` URL of this sandbox."""
    return _signature_check(request, sandbox) == "valid"


async def plain_signed_link(request: web.Request) -> web.StreamResponse | None:
    """A signed ``/files`` link used as a plain URL (a browser, curl): the SDK builds it on
    the one ``sandbox_url`` without the ``E2b-Sandbox-Id`` header, so the sandbox is the one
    whose token made the signature. ``None`` when the request is not such a link."""
    if request.path != "/files" or "signature" not in request.query:
        return None
    for sandbox in request.app[CONTROL_PLANE].live():
        verdict = _signature_check(request, sandbox)
        if verdict == "valid":
            return await sandbox.envd.handle(request)
        if verdict == "expired":
            return error_response(401, "signature is already expired")
    return error_response(401, "invalid signature")


async def sandbox_request(request: web.Request, sandbox_id: str) -> web.StreamResponse:
    """Route a request carrying ``E2b-Sandbox-Id`` to the sandbox's envd or interpreter."""
    plane = request.app[CONTROL_PLANE]
    sandbox = plane.get(sandbox_id)
    if sandbox is None:
        return error_response(502, f"The sandbox {sandbox_id} was not found", sandboxId=sandbox_id)
    port = request.headers.get("E2b-Sandbox-Port", str(ENVD_PORT))
    if port == str(ENVD_PORT):
        if not (
            tokens_equal(request.headers.get("X-Access-Token"), sandbox.envd_access_token)
            or signed_url_valid(request, sandbox)
        ):
            if _signature_check(request, sandbox) == "expired":
                return error_response(401, "signature is already expired")
            return error_response(401, "missing or invalid X-Access-Token for this sandbox")
        return await sandbox.envd.handle(request)
    if port == str(INTERPRETER_PORT):
        if not (
            tokens_equal(
                request.headers.get("E2B-Traffic-Access-Token"), sandbox.traffic_access_token
            )
            or tokens_equal(request.headers.get("X-Access-Token"), sandbox.envd_access_token)
        ):
            return error_response(401, "missing or invalid access token for this sandbox")
        return await sandbox.interpreter.handle(request, request.path)
    return error_response(
        502,
        f"The sandbox {sandbox_id} is running but port {port} is not open",
        sandboxId=sandbox_id,
        port=port,
    )


# --- the application -------------------------------------------------------------------------


@web.middleware
async def dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sandbox requests bypass the router; control-plane calls need the API key; control
    errors become E2B error bodies."""
    sandbox_id = request.headers.get("E2b-Sandbox-Id")
    if sandbox_id:
        return await sandbox_request(request, sandbox_id)
    signed = await plain_signed_link(request)
    if signed is not None:
        return signed
    api_key = request.app[CONFIG].api_key
    if request.path != "/health" and not (
        tokens_equal(request.headers.get("X-API-KEY"), api_key)
        # Prometheus sends credentials as a bearer token: accepted for the scrape only.
        or (request.path == "/metrics" and tokens_equal(prometheus.bearer_key(request), api_key))
    ):
        return error_response(401, "missing or invalid X-API-KEY")
    try:
        return await handler(request)
    except ControlError as error:
        headers = {"Should-Retry": "false"} if error.status == 429 else {}
        response = error_response(error.status, error.message)
        response.headers.update(headers)
        return response
    except web.HTTPException as error:
        if error.status >= 400:
            return error_response(error.status, error.reason)
        raise


def build_app(config: Config, plane: ControlPlane) -> web.Application:
    """The aiohttp application (the control plane must be started separately)."""
    # Bodies read whole (control-plane JSON, /execute) stay small; file uploads and RPC
    # streams are read incrementally with their own caps.
    app = web.Application(middlewares=[dispatch], client_max_size=JSON_BODY_MAX_BYTES)
    app[CONFIG] = config
    app[CONTROL_PLANE] = plane
    app.router.add_get("/health", server_health)
    for prefix in ("/v2/sandboxes", "/sandboxes"):
        app.router.add_post(prefix, create_sandbox)
        app.router.add_get(prefix, list_sandboxes)
        app.router.add_post(prefix + "/{sandbox_id}/connect", connect_sandbox)
    app.router.add_post("/sandboxes/{sandbox_id}/pause", pause_sandbox)
    app.router.add_post("/sandboxes/{sandbox_id}/resume", resume_sandbox)
    app.router.add_get("/sandboxes/metrics", sandboxes_metrics)
    app.router.add_get("/sandboxes/{sandbox_id}/metrics", sandbox_metrics)
    app.router.add_get("/sandboxes/{sandbox_id}", get_sandbox)
    app.router.add_delete("/sandboxes/{sandbox_id}", kill_sandbox)
    app.router.add_post("/sandboxes/{sandbox_id}/timeout", set_timeout)
    app.router.add_post("/sandboxes/{sandbox_id}/refreshes", refresh_sandbox)
    for method, path in (
        ("POST", "/sandboxes/{sandbox_id}/snapshots"),
        ("POST", "/sandboxes/{sandbox_id}/fork"),
        ("PUT", "/sandboxes/{sandbox_id}/network"),
        ("GET", "/sandboxes/{sandbox_id}/logs"),
        ("GET", "/v2/sandboxes/{sandbox_id}/logs"),
    ):
        app.router.add_route(method, path, not_supported)
    prometheus.install(app, plane)
    return app


async def serve(config: Config, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the server until SIGTERM/SIGINT, then kill every sandbox and return.

    Raises ``UnsafeHostError`` (from the jail manager) when sandboxes cannot be made safe,
    and ``OSError`` when the address is taken. ``ready`` gets the URL once it answers.
    """
    watchdog = LoopWatchdog(asyncio.get_running_loop())
    watchdog.start()
    try:
        await _serve(config, ready)
    finally:
        watchdog.stop()


async def _serve(config: Config, ready: Callable[[str], None] | None) -> None:
    plane = ControlPlane(config)
    await plane.start()
    app = build_app(config, plane)
    # handler_cancellation: a client that goes away cancels its handler, which is how a
    # closed /execute interrupts the run and a closed process stream unsubscribes.
    access_log = logging.getLogger("sandboxd.access") if config.log_level == "debug" else None
    runner = web.AppRunner(app, handler_cancellation=True, access_log=access_log)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        host, port = runner.addresses[0][:2]  # the port actually bound (for --port 0)
        url = f"http://{host}:{port}"
        if ready is not None:
            ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("stopping: killing %d sandboxes", len(plane.live()))
    finally:
        await runner.cleanup()
        await plane.close()
