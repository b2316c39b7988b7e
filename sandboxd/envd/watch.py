"""Directory watching for envd, on inotify inside the sandbox (``Jail.watch``).

The agent reads the kernel's events as they happen (recursively: new directories are watched
as they appear) and sends them to the host; this module turns them into envd's
``FilesystemEvent`` values, names relative to the watched directory, with envd's kinds (see
``sandboxd/agent/inotify.py``). The unary watcher API (CreateWatcher / GetWatcherEvents) asks
the agent to flush first, so a change made just before ``get_new_events()`` is in its answer.

Bounds: a sandbox holds at most ``MAX_WATCHES`` watches (the agent's own bound, which also
counts watch streams), the server at most ``MAX_SERVER_WATCHES``; a watch covers at most
10 000 directories; events waiting for a slow client are bounded on both sides of the agent
channel, and past a bound the watch ends with ``resource_exhausted`` saying why.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb

from sandboxd.envd.entries import entry_info
from sandboxd.envd.errors import JAIL_ERRORS

if TYPE_CHECKING:
    from sandboxd.jail import Jail, JailWatch

# Watches one server holds across all its sandboxes (the per-sandbox bound is the agent's).
MAX_SERVER_WATCHES = 64
_EVENT_TYPES = {
    "create": filesystem_pb.EventType.CREATE,
    "write": filesystem_pb.EventType.WRITE,
    "remove": filesystem_pb.EventType.REMOVE,
    "rename": filesystem_pb.EventType.RENAME,
    "chmod": filesystem_pb.EventType.CHMOD,
}


class ServerWatchBudget:
    """The server-wide count of live watches (one per process: envd services share it)."""

    live = 0

    @classmethod
    def take(cls) -> None:
        if cls.live >= MAX_SERVER_WATCHES:
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"this server watches {MAX_SERVER_WATCHES} directories already; try later",
            )
        cls.live += 1

    @classmethod
    def give_back(cls) -> None:
        cls.live = max(0, cls.live - 1)


class DirectoryWatch:
    """One watch as envd's API sees it.

    ``start`` raises ``sandboxd.jail.FsError`` (not_found, invalid_argument for a file,
    resource_exhausted) and ``ConnectError(RESOURCE_EXHAUSTED)`` at the server's bound.
    """

    def __init__(self, jail: Jail, path: str, *, recursive: bool, include_entry: bool) -> None:
        self._jail = jail
        self._path = path
        self._recursive = recursive
        self._include_entry = include_entry
        self._watch: JailWatch | None = None

    async def start(self) -> None:
        ServerWatchBudget.take()
        try:
            self._watch = await self._jail.watch(self._path, recursive=self._recursive)
        except BaseException:
            ServerWatchBudget.give_back()
            raise

    async def stop(self) -> None:
        if self._watch is not None:
            watch, self._watch = self._watch, None
            ServerWatchBudget.give_back()
            await watch.stop()

    async def next_events(self, seconds: float) -> list[filesystem_pb.FilesystemEvent]:
        """Events as soon as there are some, or [] after `seconds` (streams)."""
        assert self._watch is not None
        return await self._events(await self._watch.wait(seconds))

    async def events_so_far(self) -> list[filesystem_pb.FilesystemEvent]:
        """Every event up to this moment (the unary watcher API)."""
        assert self._watch is not None
        return await self._events(await self._watch.flush())

    async def _events(
        self, raw: list[tuple[str, str, bool]]
    ) -> list[filesystem_pb.FilesystemEvent]:
        assert self._watch is not None
        events = []
        for kind, name, _is_dir in raw:
            entry = None
            if self._include_entry and kind in ("create", "write", "chmod"):
                try:  # best effort, as envd: the path may be gone already
                    entry = entry_info(
                        await self._jail.stat(posixpath.join(self._watch.root, name))
                    )
                except JAIL_ERRORS:
                    entry = None
            events.append(
                filesystem_pb.FilesystemEvent(name=name, type=_EVENT_TYPES[kind], entry=entry)
            )
        return events
