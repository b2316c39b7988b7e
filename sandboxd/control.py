"""The control plane's state: live sandboxes, their lifetimes, the cap, and a warm pool.

``ControlPlane`` owns every sandbox this server runs. A sandbox is a jail (``sandboxd.jail``)
plus its code interpreter (``sandboxd.interpreter``) and envd (``sandboxd.envd``). It dies at
its end time (``set_timeout`` moves it), on ``kill``, and with the server (``close``).

New sandboxes come from a small pool of pre-started ones (jail created and the default
Python and JavaScript contexts warmed), so the first ``run_code`` of a new sandbox does not
wait for a kernel start; the pool refills in the background. Pooled sandboxes do not count against
``max_sandboxes``, which caps what clients hold.

Errors are ``ControlError`` values carrying the HTTP status and message E2B's API would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sandboxd import prometheus
from sandboxd.envd import Envd
from sandboxd.interpreter import RO_BINDS, Interpreter
from sandboxd.jail import JailManager, Limits
from sandboxd.logs import untrusted
from sandboxd.metrics import MetricsRecorder
from sandboxd.pause import (
    PausedRecord,
    PauseStore,
    restore_workspace,
    save_workspace,
)
from sandboxd.templates import Template, Templates, UnknownTemplate

if TYPE_CHECKING:
    from sandboxd.config import Config
    from sandboxd.jail import Jail

log = logging.getLogger(__name__)

# Seconds allowed for stopping one sandbox's kernels before its jail is destroyed anyway.
INTERPRETER_CLOSE_SECONDS = 5.0
# How long a connect or info call waits for a pause in progress to finish.
PAUSE_WAIT_SECONDS = 60.0
# Back-off after the pool failed to start a sandbox, so a broken host does not spin.
POOL_RETRY_SECONDS = (1.0, 2.0, 5.0, 15.0, 30.0)


class ControlError(Exception):
    """A control-plane request failed; ``status`` is the HTTP status E2B answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Prepared:
    """A started sandbox not yet handed to a client (the pool holds these)."""

    jail: Jail
    interpreter: Interpreter
    envd: Envd


@dataclass
class Sandbox:
    """A sandbox a client holds: its parts, its tokens, its metadata and its lifetime."""

    sandbox_id: str
    template_id: str
    jail: Jail
    interpreter: Interpreter
    envd: Envd
    envd_access_token: str
    traffic_access_token: str
    metadata: dict[str, str]
    env_vars: dict[str, str]
    started_at: datetime
    end_at: datetime
    metrics: MetricsRecorder
    auto_pause: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    state: str = "running"


def new_sandbox_id() -> str:
    """A random sandbox id: 20 lowercase hex characters (usable in paths and cgroup names)."""
    return secrets.token_hex(10)


def new_token() -> str:
    """A random access token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class ControlPlane:
    """Every sandbox of one sandboxd process (use from a single event loop)."""

    def __init__(self, config: Config, manager: JailManager | None = None) -> None:
        self._config = config
        self._limits = Limits(**config.limit_overrides())
        self._manager = manager or JailManager(
            state_dir=config.state_dir,
            sandbox_env=config.sandbox_env,
            ro_binds=RO_BINDS,
            egress=config.egress,
        )
        self._sandboxes: dict[str, Sandbox] = {}
        self._reserved = 0  # creations in progress, counted against the cap
        self._pool: list[Prepared] = []
        self._pool_wakeup = asyncio.Event()
        self._pool_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False
        self._templates = Templates(config)
        self._store = PauseStore(config.state_dir)
        self._paused: dict[str, PausedRecord] = {}
        self._transitions: set[str] = set()  # ids being paused or resumed right now
        self._pausing: dict[str, asyncio.Event] = {}  # set when that pause has finished

    @property
    def limits(self) -> Limits:
        return self._limits

    async def start(self) -> None:
        """Start the jail manager (raises ``UnsafeHostError``) and begin filling the pool."""
        await self._manager.start()
        self._store.prepare()
        self._paused = await asyncio.to_thread(self._store.load_all)
        if self._paused:
            log.info("%d paused sandboxes kept from before", len(self._paused))
        if self._config.pool_size > 0:
            self._pool_task = asyncio.create_task(self._fill_pool(), name="sandboxd-pool")

    # --- sandboxes --------------------------------------------------------------------------

    def get(self, sandbox_id: str) -> Sandbox | None:
        """The live sandbox with this id, or ``None``.

        A sandbox whose jail died on its own (its agent was killed, the whole sandbox ran
        out of memory) is gone: it is cleaned up now and reported like a killed one.
        """
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is not None and not sandbox.jail.alive:
            log.warning("sandbox %s died on its own; removing it", sandbox_id)
            del self._sandboxes[sandbox_id]
            self._spawn_background(self._destroy(sandbox))
            return None
        return sandbox

    def live(self) -> list[Sandbox]:
        return [sandbox for sandbox in self._sandboxes.values() if sandbox.jail.alive]

    def pool_ready(self) -> int:
        """How many pre-started sandboxes wait in the pool right now."""
        return len(self._pool)

    async def create(
        self,
        *,
        template_id: str,
        timeout_seconds: int | None,
        metadata: Mapping[str, str],
        env_vars: Mapping[str, str],
        auto_pause: bool = False,
    ) -> Sandbox:
        """Hand out a new sandbox: from the pool when one is ready, else started now.

        Raises ``ControlError(429)`` at the cap, ``ControlError(400)`` for a bad timeout and
        ``ControlError(500)`` when the sandbox cannot be started.
        """
        lifetime = self._lifetime(timeout_seconds)
        try:
            template = self._templates.get(template_id)
        except UnknownTemplate as error:
            log.info("refused a sandbox of unknown template %r", template_id)
            raise ControlError(404, error.message) from None
        if self._closing:
            raise ControlError(503, "sandboxd is shutting down")
        for sandbox_id in list(self._sandboxes):
            self.get(sandbox_id)  # forgets sandboxes that died on their own
        self._check_cap()
        self._reserved += 1
        prepared: Prepared | None = None
        began = time.monotonic()
        try:
            prepared = self._take_from_pool() if template == self._templates.default else None
            origin = "pool" if prepared is not None else "cold"
            if prepared is None:
                prepared = await self._prepare(new_sandbox_id(), warm=False, template=template)
            if env_vars:
                await prepared.interpreter.set_envs(env_vars)
                prepared.envd.set_envs(env_vars)
        except BaseException as error:
            # Also on cancellation (the client left mid-create): a sandbox nobody will get
            # must not linger until the server stops.
            if prepared is not None:
                self._spawn_background(self._destroy_prepared(prepared))
            if isinstance(error, Exception):
                # The details (host paths, the state dir, bwrap's words) go to the log only.
                log.exception("starting a sandbox failed")
                raise ControlError(
                    500, "the sandbox could not be started (the server's log says why)"
                ) from error
            raise
        finally:
            self._reserved -= 1
        now = datetime.now(UTC)
        sandbox = Sandbox(
            sandbox_id=prepared.jail.sandbox_id,
            template_id=template_id,
            jail=prepared.jail,
            interpreter=prepared.interpreter,
            envd=prepared.envd,
            envd_access_token=new_token(),
            traffic_access_token=new_token(),
            metadata=dict(metadata),
            env_vars=dict(env_vars),
            started_at=now,
            end_at=now,
            metrics=self._recorder(prepared.jail),
            auto_pause=auto_pause,
        )
        self._sandboxes[sandbox.sandbox_id] = sandbox
        sandbox.metrics.start()
        self._schedule_end(sandbox, lifetime)
        prometheus.SANDBOX_CREATE_SECONDS.labels(origin).observe(time.monotonic() - began)
        log.info("sandbox %s created (template %s)", sandbox.sandbox_id, untrusted(template_id))
        return sandbox

    def _check_cap(self) -> None:
        if len(self._sandboxes) + self._reserved >= self._config.max_sandboxes:
            raise ControlError(
                429,
                f"the limit of {self._config.max_sandboxes} live sandboxes is reached; "
                "kill one or wait for one to time out",
            )

    def _recorder(self, jail: Jail) -> MetricsRecorder:
        return MetricsRecorder(jail, cpus=self._limits.cpus, memory_bytes=self._limits.memory_bytes)

    def connect(self, sandbox_id: str, timeout: int | None) -> Sandbox:
        """Reconnect to a running sandbox; its lifetime only grows (E2B's rule for running
        sandboxes). Raises ``ControlError(404)`` for an unknown sandbox (``resume`` handles a
        paused one)."""
        sandbox = self._require(sandbox_id)
        lifetime = self._lifetime(timeout)
        if datetime.now(UTC) + timedelta(seconds=lifetime) > sandbox.end_at:
            self._schedule_end(sandbox, lifetime)
        return sandbox

    def is_paused(self, sandbox_id: str) -> bool:
        return sandbox_id in self._paused

    def paused(self, sandbox_id: str) -> PausedRecord | None:
        return self._paused.get(sandbox_id)

    async def pause(self, sandbox_id: str) -> None:
        """Stop the sandbox, keeping its workspace on disk (see sandboxd.pause).

        ``ControlError(409)`` when it is paused already, 404 when unknown, 500 when the
        workspace could not be archived (the sandbox is then killed: half a pause is
        nothing to resume).
        """
        if sandbox_id in self._paused:
            raise ControlError(409, f"sandbox {sandbox_id} is already paused")
        sandbox = self._require(sandbox_id)
        if sandbox_id in self._transitions:
            raise ControlError(409, f"sandbox {sandbox_id} is being paused or resumed")
        self._transitions.add(sandbox_id)
        self._pausing[sandbox_id] = asyncio.Event()
        try:
            del self._sandboxes[sandbox_id]
            if sandbox.timer is not None:
                sandbox.timer.cancel()
            await sandbox.metrics.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sandbox.interpreter.close(), INTERPRETER_CLOSE_SECONDS)
            archive = self._store.archive(sandbox_id)
            try:
                size = await save_workspace(sandbox.jail, archive)
            except Exception as error:
                self._store.delete(sandbox_id)
                await self._destroy(sandbox)
                log.warning("pausing sandbox %s failed: %s", sandbox_id, error)
                raise ControlError(500, f"the sandbox could not be paused: {error}") from error
            record = PausedRecord(
                sandbox_id=sandbox_id,
                template_id=sandbox.template_id,
                metadata=sandbox.metadata,
                env_vars=sandbox.env_vars,
                envd_access_token=sandbox.envd_access_token,
                traffic_access_token=sandbox.traffic_access_token,
                started_at=sandbox.started_at,
                end_at=datetime.now(UTC),
                auto_pause=sandbox.auto_pause,
            )
            await asyncio.to_thread(self._store.save, record)
            self._paused[sandbox_id] = record
            await self._destroy(sandbox)
            log.info("sandbox %s paused (workspace %d bytes)", sandbox_id, size)
        finally:
            self._transitions.discard(sandbox_id)
            self._pausing.pop(sandbox_id).set()

    async def settled(self, sandbox_id: str) -> None:
        """Wait (bounded) for a pause in progress to finish: a client that saw the sandbox
        stop running and connects at once must find it paused, not missing."""
        pausing = self._pausing.get(sandbox_id)
        if pausing is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pausing.wait(), PAUSE_WAIT_SECONDS)

    async def resume(self, sandbox_id: str, timeout_seconds: int | None) -> Sandbox:
        """Start a paused sandbox again with its workspace; kernels start fresh.

        ``ControlError(404)`` when there is no such paused sandbox, 429 at the cap, 500 when
        it cannot be started (it stays paused).
        """
        record = self._paused.get(sandbox_id)
        if record is None or sandbox_id in self._transitions:
            raise ControlError(404, f"paused sandbox {sandbox_id} not found")
        lifetime = self._lifetime(timeout_seconds)
        self._check_cap()
        self._transitions.add(sandbox_id)
        self._reserved += 1
        try:
            try:
                template = self._templates.get(record.template_id)
            except UnknownTemplate:  # no longer offered: its workspace still comes back
                template = self._templates.default
            prepared = await self._prepare(sandbox_id, warm=False, template=template)
            try:
                await restore_workspace(prepared.jail, self._store.archive(sandbox_id))
                if record.env_vars:
                    await prepared.interpreter.set_envs(record.env_vars)
                    prepared.envd.set_envs(record.env_vars)
            except BaseException as error:
                await self._destroy_prepared(prepared)
                if isinstance(error, Exception):
                    raise ControlError(500, f"the sandbox could not be resumed: {error}") from error
                raise
        finally:
            self._reserved -= 1
            self._transitions.discard(sandbox_id)
        now = datetime.now(UTC)
        sandbox = Sandbox(
            sandbox_id=sandbox_id,
            template_id=record.template_id,
            jail=prepared.jail,
            interpreter=prepared.interpreter,
            envd=prepared.envd,
            envd_access_token=record.envd_access_token,
            traffic_access_token=record.traffic_access_token,
            metadata=record.metadata,
            env_vars=record.env_vars,
            started_at=record.started_at,
            end_at=now,
            metrics=self._recorder(prepared.jail),
            auto_pause=record.auto_pause,
        )
        del self._paused[sandbox_id]
        self._sandboxes[sandbox_id] = sandbox
        sandbox.metrics.start()
        self._schedule_end(sandbox, lifetime)
        await asyncio.to_thread(self._store.delete, sandbox_id)
        log.info("sandbox %s resumed", sandbox_id)
        return sandbox

    def set_timeout(self, sandbox_id: str, timeout: int) -> Sandbox:
        """The sandbox now dies ``timeout`` seconds from now (shorter or longer); 0 ends it
        now (or pauses it, when it asked for auto-pause), as E2B does."""
        sandbox = self._require(sandbox_id)
        self._schedule_end(sandbox, 0 if timeout == 0 else self._lifetime(timeout))
        return sandbox

    async def kill(self, sandbox_id: str) -> bool:
        """Destroy a sandbox now; False when there is no such live sandbox."""
        await self.settled(sandbox_id)
        if sandbox_id in self._paused and sandbox_id not in self._transitions:
            del self._paused[sandbox_id]
            await asyncio.to_thread(self._store.delete, sandbox_id)
            log.info("paused sandbox %s killed", sandbox_id)
            return True
        sandbox = self._sandboxes.pop(sandbox_id, None)
        if sandbox is None:
            return False
        await self._destroy(sandbox)
        log.info("sandbox %s killed", sandbox_id)
        return True

    def query(
        self,
        *,
        metadata: Mapping[str, str] | None = None,
        states: Iterable[str] | None = None,
        template_id: str | None = None,
        started_after: datetime | None = None,
        descending: bool = False,
    ) -> list[Sandbox | PausedRecord]:
        """Running and paused sandboxes matching every given filter, ordered by start time
        (``state`` on each says which)."""
        wanted = set(states) if states is not None else {"running", "paused"}
        candidates: list[Sandbox | PausedRecord] = []
        if "running" in wanted:
            candidates += [s for s in self._sandboxes.values() if s.jail.alive]
        if "paused" in wanted:
            candidates += list(self._paused.values())
        found = [
            sandbox
            for sandbox in candidates
            if (template_id is None or sandbox.template_id == template_id)
            and (started_after is None or sandbox.started_at >= started_after)
            and all(sandbox.metadata.get(key) == value for key, value in (metadata or {}).items())
        ]
        found.sort(key=lambda sandbox: sandbox.started_at, reverse=descending)
        return found

    async def close(self) -> None:
        """Kill every sandbox, empty the pool and stop the jail manager."""
        self._closing = True
        if self._pool_task is not None:
            self._pool_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pool_task
        for task in list(self._background):
            task.cancel()
        doomed = list(self._sandboxes.values())
        self._sandboxes.clear()
        pooled, self._pool = self._pool, []
        await asyncio.gather(
            *(self._destroy(sandbox) for sandbox in doomed),
            *(self._destroy_prepared(prepared) for prepared in pooled),
            return_exceptions=True,
        )
        await self._manager.close()

    # --- lifetimes --------------------------------------------------------------------------

    def _require(self, sandbox_id: str) -> Sandbox:
        sandbox = self.get(sandbox_id)
        if sandbox is None:
            raise ControlError(404, f"sandbox {sandbox_id} not found")
        return sandbox

    def _lifetime(self, timeout: int | None) -> int:
        if timeout is None:
            return self._config.default_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise ControlError(
                400, f"timeout must be a positive number of seconds, not {timeout!r}"
            )
        if timeout > self._config.max_timeout:
            raise ControlError(
                400, f"timeout must not exceed {self._config.max_timeout} seconds (got {timeout})"
            )
        return timeout

    def _schedule_end(self, sandbox: Sandbox, seconds: int) -> None:
        if sandbox.timer is not None:
            sandbox.timer.cancel()
        sandbox.end_at = datetime.now(UTC) + timedelta(seconds=seconds)
        loop = asyncio.get_running_loop()
        sandbox.timer = loop.call_at(loop.time() + seconds, self._on_timer, sandbox.sandbox_id)

    def _on_timer(self, sandbox_id: str) -> None:
        self._spawn_background(self._expire(sandbox_id))

    async def _expire(self, sandbox_id: str) -> None:
        sandbox = self._sandboxes.get(sandbox_id)
        # The timer may fire a moment early relative to the wall clock; only expire a
        # sandbox whose end time has really come (a later set_timeout moved it otherwise).
        if sandbox is None or sandbox.end_at > datetime.now(UTC) + timedelta(seconds=1):
            return
        if sandbox.auto_pause:
            log.info("sandbox %s reached its timeout: pausing it", sandbox_id)
            with contextlib.suppress(ControlError):
                await self.pause(sandbox_id)
            return
        log.info("sandbox %s reached its timeout", sandbox_id)
        await self.kill(sandbox_id)

    def _spawn_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _destroy(self, sandbox: Sandbox) -> None:
        if sandbox.timer is not None:
            sandbox.timer.cancel()
        await sandbox.metrics.stop()
        await self._destroy_prepared(
            Prepared(jail=sandbox.jail, interpreter=sandbox.interpreter, envd=sandbox.envd)
        )

    async def _destroy_prepared(self, prepared: Prepared) -> None:
        """Stop the kernels (bounded), then destroy the jail, which ends everything else."""
        began = time.monotonic()
        # Read before the jail goes: its cgroup, and the count in it, go with it.
        oom_kills = prepared.jail.oom_kills()
        try:
            await asyncio.wait_for(prepared.interpreter.close(), INTERPRETER_CLOSE_SECONDS)
        except Exception:
            log.warning("closing the interpreter of %s failed", prepared.jail.sandbox_id)
        try:
            await prepared.jail.destroy()
        except Exception:
            log.exception("destroying sandbox %s failed", prepared.jail.sandbox_id)
        await prepared.envd.close()
        prometheus.observe_destroy(prepared.jail, time.monotonic() - began, oom_kills=oom_kills)

    # --- the pool ---------------------------------------------------------------------------

    async def _prepare(
        self, sandbox_id: str, *, warm: bool, template: Template | None = None
    ) -> Prepared:
        """Start a jail of `template` (default: the default one) with its interpreter and
        envd; warm its default contexts when asked."""
        template = template or self._templates.default
        jail = await self._manager.create(
            sandbox_id, limits=self._limits, sandbox_env=template.sandbox_env
        )
        try:
            interpreter = Interpreter(jail)
            if warm:
                await interpreter.warm()
        except BaseException:
            await jail.destroy()
            raise
        envd = Envd(jail, envs={}, max_file_bytes=self._config.max_file_bytes)
        return Prepared(jail=jail, interpreter=interpreter, envd=envd)

    def _take_from_pool(self) -> Prepared | None:
        while self._pool:
            prepared = self._pool.pop(0)
            self._pool_wakeup.set()
            if prepared.jail.alive:
                return prepared
            self._spawn_background(self._destroy_prepared(prepared))
        self._pool_wakeup.set()
        return None

    async def _fill_pool(self) -> None:
        """Keep ``pool_size`` warm sandboxes ready, one start at a time (2-core machines)."""
        failures = 0
        while not self._closing:
            if len(self._pool) >= self._config.pool_size:
                self._pool_wakeup.clear()
                await self._pool_wakeup.wait()
                continue
            started = time.monotonic()
            try:
                prepared = await self._prepare(new_sandbox_id(), warm=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = POOL_RETRY_SECONDS[min(failures, len(POOL_RETRY_SECONDS) - 1)]
                failures += 1
                log.exception("pre-starting a sandbox failed; retrying in %.0f s", delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            if self._closing:
                await self._destroy_prepared(prepared)
                return
            self._pool.append(prepared)
            log.debug("pool: sandbox ready in %.0f ms", (time.monotonic() - started) * 1000)
