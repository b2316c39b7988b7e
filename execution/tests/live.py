"""A real deployment of the project for websocket tests and benchmarks.

What runs here is what runs in production, only on loopback and in a temporary directory:
daphne processes serving `atlaschat.asgi:application`, sharing one database (an SQLite
file, or a fresh PostgreSQL database when the test run uses PostgreSQL) and, when asked,
a Redis channel layer, in front of a real sandboxd. The test process reaches the same
database through an extra connection alias (`live_…`), so a test creates users
and threads and checks rows exactly as the servers see them.

Used by `execution/tests/test_ws_live*.py` (through fixtures in those modules) and by
`bench/bench_execution.py`; nothing here is a fake of our own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connections
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

LIVE_DB_ALIAS = "live"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PROJECT_DIR = Path(settings.BASE_DIR)
_LISTENING = re.compile(r"Listening on TCP address [\d.]+:(\d+)")


# --- the shared database --------------------------------------------------------------------


@dataclass(frozen=True)
class LiveDatabase:
    """A migrated database shared by the test process (`alias`) and the servers (`env`)."""

    alias: str
    env: dict[str, str]  # what a server process needs in its environment to use it


@contextlib.contextmanager
def live_database(directory: Path, *, alias: str | None = None) -> Iterator[LiveDatabase]:
    """Create a fresh database, migrate it, register it as an alias; drop it on exit.

    The alias is new each time (`live_<random>`) unless given: Django keeps connections
    per thread, and a worker thread (asgiref's) may still hold one for an earlier live
    database under the old name.

    SQLite (the embedded default) becomes a file in `directory`: the test database of
    pytest-django lives in memory, which other processes cannot open. Under PostgreSQL
    (`DATABASE_URL` set) a new database is created on the same server. Call it after
    pytest-django has set up its test databases (depend on `django_db_setup`) so the
    extra alias is not mistaken for one of them.
    """
    alias = alias or f"{LIVE_DB_ALIAS}_{uuid.uuid4().hex[:8]}"
    base = copy.deepcopy(connections.settings["default"])
    engine = base["ENGINE"]
    if "sqlite3" in engine:
        path = directory / "db.sqlite3"
        conf = {**base, "NAME": str(path), "TEST": {**base.get("TEST", {}), "NAME": None}}
        # The servers find it through ATLASCHAT_VAR_DIR, which keeps the settings' own
        # SQLite options (lock timeout, IMMEDIATE transactions) that a URL would drop.
        env = {"ATLASCHAT_VAR_DIR": str(directory)}
        drop = None
    elif "postgresql" in engine:
        name = f"atlaschat_live_{uuid.uuid4().hex[:12]}"
        with connections["default"]._nodb_cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        conf = {**base, "NAME": name, "TEST": {**base.get("TEST", {}), "NAME": None}}
        url = urlsplit(os.environ["DATABASE_URL"])
        env = {
            "ATLASCHAT_VAR_DIR": str(directory),
            "DATABASE_URL": urlunsplit(url._replace(path=f"/{name}")),
        }

        def drop() -> None:
            with connections["default"]._nodb_cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    else:  # pragma: no cover - the project supports exactly these two
        raise RuntimeError(f"live tests support SQLite and PostgreSQL, not {engine}")

    connections.settings[alias] = conf
    try:
        call_command("migrate", database=alias, verbosity=0, interactive=False)
        yield LiveDatabase(alias=alias, env=env)
    finally:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]
        if drop is not None:
            drop()


# --- daphne processes -----------------------------------------------------------------------


@dataclass
class DaphneServer:
    """One daphne process serving the project on loopback."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://{self.host}:{self.port}/{path.lstrip('/')}"

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, to show in a failure."""
        return self.log_path.read_text(errors="replace")[-chars:]


def redis_url_if_reachable(url: str | None = None) -> str | None:
    """Return the Redis URL (REDIS_URL or the local default) when Redis answers a PING."""
    import redis  # channels_redis's own client

    url = url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return url if client.ping() else None
    except redis.RedisError:
        return None
    finally:
        client.close()


def server_env(
    *,
    database: LiveDatabase,
    sandboxd_url: str,
    sandboxd_api_key: str,
    redis_url: str | None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a server process: ours only, never the caller's database/layer."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "E2B_API_KEY", "E2B_DOMAIN"}
    }
    env.update(database.env)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "atlaschat.settings",
            # The same key as this process, so tokens and session cookies made here verify.
            "SECRET_KEY": settings.SECRET_KEY,
            "DEBUG": "0",
            "SANDBOXD_URL": sandboxd_url,
            "SANDBOXD_API_KEY": sandboxd_api_key,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running_daphne(
    *,
    env: dict[str, str],
    log_path: Path,
    start_timeout: float = 60.0,
) -> Iterator[DaphneServer]:
    """Start `daphne atlaschat.asgi:application` on a free loopback port; stop it on exit.

    The port is chosen by the kernel (`-p 0`) and read from daphne's own "Listening on"
    line, so parallel test runs never collide. Raises RuntimeError with the log's end when
    the server exits or does not listen within `start_timeout` seconds.
    """
    argv = [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        "127.0.0.1",
        "-p",
        "0",
        "--application-close-timeout",
        "5",
        "atlaschat.asgi:application",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server: DaphneServer | None = None
    try:
        deadline = time.monotonic() + start_timeout
        while server is None:
            match = _LISTENING.search(log_path.read_text(errors="replace"))
            if match:
                server = DaphneServer(port=int(match.group(1)), process=process, log_path=log_path)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"daphne did not start (exit {process.poll()}):\n"
                    f"{log_path.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.05)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


# --- identities -----------------------------------------------------------------------------


def create_user(alias: str, username: str, password: str | None = None) -> AbstractBaseUser:
    """Create a user in the live database (a random password unless one is given)."""
    from django.contrib.auth import get_user_model

    return (
        get_user_model()
        .objects.db_manager(alias)
        .create_user(
            username=username,
            email=f"{username}@example.com",
            password=password or secrets.token_urlsafe(16),
        )
    )


def bearer_headers(user: AbstractBaseUser) -> dict[str, str]:
    """The handshake header of an API client: a fresh access JWT for `user`."""
    return {"Authorization": f"Bearer {AccessToken.for_user(user)}"}


def session_cookie_header(alias: str, user: AbstractBaseUser) -> dict[str, str]:
    """The handshake header of a logged-in browser: a real session row for `user`.

    Built the way `django.contrib.auth.login` stores a session (user id, backend, the
    password-derived hash), saved in the live database, signed with the shared key.
    """
    store = SessionStore()
    data = {
        SESSION_KEY: str(user.pk),
        BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
        HASH_SESSION_KEY: user.get_session_auth_hash(),
    }
    key = secrets.token_hex(16)
    Session.objects.using(alias).create(
        session_key=key,
        session_data=store.encode(data),
        expire_date=timezone.now() + timedelta(hours=1),
    )
    return {"Cookie": f"{settings.SESSION_COOKIE_NAME}={key}"}


@contextlib.asynccontextmanager
async def alice_thread(live: LiveUsers, title: str) -> AsyncIterator[Any]:
    """A fresh thread of alice's in the live database, deleted (sandbox and all) after."""
    from execution.models import Thread

    thread = await sync_to_async(Thread.objects.using(live.alias).create)(
        owner=live.alice, title=title
    )
    try:
        yield thread
    finally:
        await delete_thread(live.server, live.alice, thread.id)


async def delete_thread(server: DaphneServer, user: AbstractBaseUser, thread_id: Any) -> None:
    """Delete a thread through the API, which kills its sandbox: tests free what they used,
    so a shared sandboxd never reaches its cap of live sandboxes."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as client:
        response = await client.delete(f"/api/threads/{thread_id}/", headers=bearer_headers(user))
    if response.status_code not in (204, 404):
        raise RuntimeError(f"deleting thread {thread_id}: {response.status_code} {response.text}")


# --- a websocket client ---------------------------------------------------------------------


@dataclass
class Frames:
    """Frames received on one socket, in order, and how the socket ended."""

    items: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.items if frame.get("type") == kind]

    def types(self) -> list[str]:
        return [frame["type"] for frame in self.items]

    def stdout(self) -> str:
        return "".join(frame["text"] for frame in self.of_type("stdout"))


async def open_socket(
    server: DaphneServer,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
) -> ClientConnection:
    """Open a websocket to `server` as a real client would (JWT or cookie in `headers`).

    The Origin header is the server's own address unless `origin` says otherwise: the
    project refuses handshakes without an allowed Origin (see the README's protocol).
    """
    return await connect(
        server.ws_url(path),
        additional_headers=headers or {},
        origin=origin or server.http_url,  # type: ignore[arg-type]
        open_timeout=10,
        max_size=None,
    )


async def receive_frame(socket: ClientConnection, within: float = 60.0) -> dict[str, Any]:
    """The next JSON frame within `within` seconds; raises TimeoutError or ConnectionClosed."""
    async with asyncio.timeout(within):
        return json.loads(await socket.recv())


async def receive_until(
    socket: ClientConnection,
    *,
    done_of: str | None = None,
    within: float = 60.0,
) -> Frames:
    """Collect frames until the socket closes or (with `done_of`) that execution's `done`."""
    frames = Frames()
    deadline = asyncio.get_running_loop().time() + within
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            frame = await receive_frame(socket, max(remaining, 0.001))
        except ConnectionClosed as exc:
            frames.close_code = exc.rcvd.code if exc.rcvd else None
            return frames
        frames.items.append(frame)
        if (
            done_of is not None
            and frame.get("type") == "done"
            and frame.get("execution_id") == done_of
        ):
            return frames


async def close_code_of(socket: ClientConnection, within: float = 10.0) -> int | None:
    """Wait for the server to close `socket` (ignoring frames) and return its close code."""
    frames = await receive_until(socket, within=within)
    return frames.close_code


# --- a whole deployment ---------------------------------------------------------------------


@dataclass
class LiveStack:
    """A database and one or more daphne servers sharing it (and Redis, when given)."""

    database: LiveDatabase
    servers: list[DaphneServer]
    directory: Path

    @property
    def server(self) -> DaphneServer:
        return self.servers[0]


@contextlib.contextmanager
def live_stack(
    directory: Path,
    *,
    sandboxd_url: str,
    sandboxd_api_key: str,
    servers: int = 1,
    redis_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LiveStack]:
    """Create the shared database, then start `servers` daphne processes in front of it.

    Several servers only make sense with `redis_url`: the in-memory channel layer lives
    inside one process, so another process's clients would never see its events.
    """
    with live_database(directory) as database:
        try:
            with contextlib.ExitStack() as stack:
                env = server_env(
                    database=database,
                    sandboxd_url=sandboxd_url,
                    sandboxd_api_key=sandboxd_api_key,
                    redis_url=redis_url,
                    extra=extra_env,
                )
                started = [
                    stack.enter_context(
                        running_daphne(env=env, log_path=directory / f"daphne-{n}.log")
                    )
                    for n in range(servers)
                ]
                yield LiveStack(database=database, servers=started, directory=directory)
        finally:
            kill_thread_sandboxes(
                database.alias, sandboxd_url=sandboxd_url, sandboxd_api_key=sandboxd_api_key
            )


def kill_thread_sandboxes(alias: str, *, sandboxd_url: str, sandboxd_api_key: str) -> int:
    """Kill the sandboxes the servers left to the live database's threads; how many.

    A stopped server does not kill its threads' sandboxes (they outlive a restart on
    purpose), so without this every live stack would leave its sandboxes on the shared
    sandboxd until they time out, and later tests would meet its cap of live sandboxes.
    """
    from e2b_code_interpreter import Sandbox

    from execution.models import Thread

    killed = 0
    sandbox_ids = (
        Thread.objects.using(alias).exclude(sandbox_id="").values_list("sandbox_id", flat=True)
    )
    for sandbox_id in sandbox_ids:
        # One that is already gone (timed out, killed by a test) is fine.
        with contextlib.suppress(Exception):
            killed += bool(Sandbox.kill(sandbox_id, api_key=sandboxd_api_key, api_url=sandboxd_url))
    return killed


@dataclass
class LiveUsers:
    """A live stack whose database holds alice (the owner) and charlie (must see nothing)."""

    stack: LiveStack
    alice: AbstractBaseUser
    charlie: AbstractBaseUser

    @property
    def server(self) -> DaphneServer:
        return self.stack.server

    @property
    def alias(self) -> str:
        return self.stack.database.alias


LiveUsersT = TypeVar("LiveUsersT", bound=LiveUsers)


@contextlib.contextmanager
def live_users_stack(
    directory: Path,
    sandboxd_server: Any,
    cls: type[LiveUsersT] = LiveUsers,
    *,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LiveUsersT]:
    """A `live_stack` in front of `sandboxd_server` with alice and charlie created in it.

    The live database is not pytest-django's test database: callers reach it through its
    own alias (`.alias`), with database access unblocked for as long as they use it.
    """
    with live_stack(
        directory,
        sandboxd_url=sandboxd_server.url,
        sandboxd_api_key=sandboxd_server.api_key,
        extra_env=extra_env,
    ) as stack:
        alias = stack.database.alias
        yield cls(
            stack=stack, alice=create_user(alias, "alice"), charlie=create_user(alias, "charlie")
        )
