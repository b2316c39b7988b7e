"""The checks behind `/readyz` and `manage.py doctor`, each saying what is wrong and what to do.

`/healthz` stays a liveness check (the database). `/readyz` runs the quick checks
(READINESS_CHECKS: database, channel layer, sandbox backend) and answers 503 naming each part
that failed. `doctor` runs those and the slow ones (a sandbox created and `print(1)` run in it;
the package indexes reachable from a sandbox), for an operator at a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection

from execution.monitoring.sandboxd_api import sandboxd_request
from execution.sandbox import get_backend
from execution.sandbox.base import Sandbox, SandboxEvent
from execution.services.runtime import run_sandbox_call

# A readiness probe answers in about this long at worst (each network check's own limit).
CHECK_TIMEOUT_SECONDS = 3.0
# The doctor's sandbox run and install probe may take a cold sandbox start and a pip call.
SANDBOX_RUN_TIMEOUT_SECONDS = 60.0


@dataclass
class CheckResult:
    """One part's state: ok, or what is wrong (`problem`) and what to do about it (`fix`)."""

    name: str
    ok: bool
    detail: str = ""
    problem: str = ""
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": "ok" if self.ok else "failing"}
        if self.detail:
            body["detail"] = self.detail
        if not self.ok:
            body["problem"] = self.problem
            body["fix"] = self.fix
        return body


def check_database() -> CheckResult:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return CheckResult(
            "database",
            False,
            problem=f"the database does not answer: {exc}".strip(),
            fix="check DATABASE_URL (or that var/db.sqlite3 is writable) and that the "
            "database server runs; then `manage.py migrate`",
        )
    return CheckResult("database", True, detail=connection.vendor)


def check_channel_layer() -> CheckResult:
    """Send a message to a fresh channel and receive it back (Redis: a real round trip)."""
    layer = get_channel_layer()
    backend = str(settings.CHANNEL_LAYERS["default"]["BACKEND"]).rsplit(".", 1)[-1]
    if layer is None:
        return CheckResult(
            "channel_layer",
            False,
            problem="no channel layer is configured",
            fix="set CHANNEL_LAYERS (settings.py does: in memory, or Redis with REDIS_URL)",
        )

    async def round_trip() -> bool:
        channel = await layer.new_channel("readyz.")
        token = secrets.token_hex(8)
        await layer.send(channel, {"type": "readyz.ping", "token": token})
        message = await layer.receive(channel)
        return message.get("token") == token

    try:
        ok = async_to_sync(asyncio.wait_for)(round_trip(), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        return CheckResult(
            "channel_layer",
            False,
            detail=backend,
            problem=f"the channel layer failed a round trip: {type(exc).__name__}: {exc}",
            fix="check that Redis answers at REDIS_URL (`redis-cli -u $REDIS_URL ping`); live "
            "output and cancels across server processes need it",
        )
    if not ok:
        return CheckResult(
            "channel_layer",
            False,
            detail=backend,
            problem="the channel layer returned another message than the one sent",
            fix="give this site a Redis database of its own (REDIS_URL ends in /<n>)",
        )
    return CheckResult("channel_layer", True, detail=backend)


def check_sandbox_backend() -> CheckResult:
    """sandboxd: answers /health and accepts our key. E2B: the API accepts our key."""
    if settings.E2B_API_KEY:
        return _check_e2b()
    url = settings.SANDBOXD_URL.rstrip("/")
    try:
        response = sandboxd_request("GET", "/health", timeout=CHECK_TIMEOUT_SECONDS)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return CheckResult(
            "sandbox_backend",
            False,
            detail=f"sandboxd at {url}",
            problem=f"sandboxd does not answer at SANDBOXD_URL={url} ({type(exc).__name__})",
            fix="start it (`make run` does, or `.venv/bin/python -m sandboxd serve`); see "
            "var/log/sandboxd.log for why it stopped, and `python -m sandboxd doctor` for "
            "what this host lacks",
        )
    if "sandboxes" not in body:
        # /health adds the counts only for a caller with the right key.
        return CheckResult(
            "sandbox_backend",
            False,
            detail=f"sandboxd at {url}",
            problem="sandboxd answers but refuses our SANDBOXD_API_KEY",
            fix="give Django the key sandboxd was started with (make run keeps it in "
            "var/sandboxd-api-key)",
        )
    return CheckResult(
        "sandbox_backend",
        True,
        detail=f"sandboxd {body.get('version', '?')} at {url}",
        data={"sandboxes": body.get("sandboxes"), "pool_ready": body.get("pool_ready")},
    )


def _check_e2b() -> CheckResult:
    from e2b import AuthenticationException, Sandbox

    domain = settings.E2B_DOMAIN or "E2B's default domain"
    try:
        options: dict[str, Any] = {"api_key": settings.E2B_API_KEY, "limit": 1}
        if settings.E2B_DOMAIN:
            options["domain"] = settings.E2B_DOMAIN
        Sandbox.list(**options).next_items()
    except AuthenticationException:
        return CheckResult(
            "sandbox_backend",
            False,
            detail=f"E2B at {domain}",
            problem="E2B refuses E2B_API_KEY",
            fix="create a key in E2B's dashboard and set E2B_API_KEY to it",
        )
    except Exception as exc:
        return CheckResult(
            "sandbox_backend",
            False,
            detail=f"E2B at {domain}",
            problem=f"E2B's API cannot be reached: {type(exc).__name__}: {exc}",
            fix="check this host's outbound HTTPS and E2B_DOMAIN",
        )
    return CheckResult("sandbox_backend", True, detail=f"E2B at {domain}")


def _new_sandbox(check: str) -> tuple[Sandbox | None, CheckResult | None]:
    """A fresh sandbox through the sandbox contract, or the failed `check` saying why."""
    try:
        sandbox = run_sandbox_call(
            get_backend().create(metadata={"atlaschat_doctor": check}, lifetime=120),
            SANDBOX_RUN_TIMEOUT_SECONDS,
        )
    except Exception as exc:
        return None, CheckResult(
            check,
            False,
            problem=f"a sandbox could not be created: {type(exc).__name__}: {exc}",
            fix="sandboxd's log (var/log/sandboxd.log) says why; `python -m sandboxd doctor` "
            "checks bubblewrap, cgroups and the sandbox environment (`make setup` builds it)",
        )
    return sandbox, None


def _kill(sandbox: Sandbox) -> None:
    with contextlib.suppress(Exception):
        run_sandbox_call(sandbox.kill(), CHECK_TIMEOUT_SECONDS)


def check_sandbox_run() -> CheckResult:
    """Create a sandbox, run `print(1)` in it, kill it."""
    sandbox, failed = _new_sandbox("sandbox_run")
    if sandbox is None:
        assert failed is not None
        return failed
    events: list[SandboxEvent] = []
    try:
        run_sandbox_call(
            sandbox.run_code(
                "print(1)",
                language="python",
                time_limit=SANDBOX_RUN_TIMEOUT_SECONDS,
                on_event=events.append,
            ),
            SANDBOX_RUN_TIMEOUT_SECONDS + 5,
        )
    except Exception as exc:
        return CheckResult(
            "sandbox_run",
            False,
            problem=f"print(1) failed: {type(exc).__name__}: {exc}",
            fix="the kernel did not start or answer: see var/log/sandboxd.log",
        )
    finally:
        _kill(sandbox)
    printed = "".join(str(e.get("text", "")) for e in events if e["kind"] == "stdout")
    errors = [e.get("error") for e in events if e["kind"] == "error"]
    if printed != "1\n" or errors:
        return CheckResult(
            "sandbox_run",
            False,
            problem=f"print(1) gave {printed!r}" + (f" and {errors[0]}" if errors else ""),
            fix="the sandbox's Python environment is broken: rebuild it with "
            "`rm -rf var/sandbox-env && make setup`",
        )
    return CheckResult("sandbox_run", True, detail=f"print(1) ran in {sandbox.sandbox_id}")


def check_package_egress() -> CheckResult:
    """From inside a sandbox, have pip fetch a tiny wheel from its index through the install
    proxy (the path an install takes; nothing is installed, the sandbox is thrown away)."""
    sandbox, failed = _new_sandbox("package_egress")
    if sandbox is None:
        assert failed is not None
        return failed
    argv = [
        "python3", "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", "doctor-download", "six",
    ]  # fmt: skip
    try:
        result = run_sandbox_call(
            sandbox.run_command(argv, cwd="/home/user", time_limit=SANDBOX_RUN_TIMEOUT_SECONDS),
            SANDBOX_RUN_TIMEOUT_SECONDS + 5,
        )
        ok, output = result.exit_code == 0, (result.stdout + result.stderr).strip()
    except Exception as exc:
        ok, output = False, f"{type(exc).__name__}: {exc}"
    finally:
        _kill(sandbox)
    if ok:
        return CheckResult("package_egress", True, detail="pip reached its package index")
    return CheckResult(
        "package_egress",
        False,
        problem=f"pip could not reach its package index from a sandbox: {output[-300:]}",
        fix="installs go only to the indexes the host's pip and npm are configured with "
        "(pip config list; npm config get registry): check that this host reaches them, "
        "and that sandboxd runs with --egress on",
    )


READINESS_CHECKS: tuple[Callable[[], CheckResult], ...] = (
    check_database,
    check_channel_layer,
    check_sandbox_backend,
)
DOCTOR_CHECKS: tuple[Callable[[], CheckResult], ...] = (
    *READINESS_CHECKS,
    check_sandbox_run,
    check_package_egress,
)
# Checks that need the one before them (a sandbox needs a reachable backend).
DEPENDS_ON = {"sandbox_run": "sandbox_backend", "package_egress": "sandbox_run"}


def run_checks(checks: tuple[Callable[[], CheckResult], ...]) -> list[CheckResult]:
    """Run `checks` in order; a check whose prerequisite failed is reported as skipped."""
    results: list[CheckResult] = []
    failed: set[str] = set()
    for check in checks:
        name = check.__name__.removeprefix("check_")
        needs = DEPENDS_ON.get(name)
        if needs in failed:
            results.append(
                CheckResult(
                    name, False, problem=f"not tried: {needs} failed", fix=f"fix {needs} first"
                )
            )
            failed.add(name)
            continue
        result = check()
        if not result.ok:
            failed.add(result.name)
        results.append(result)
    return results
