"""Directory watching for envd, by polling: changes are found by comparing two listings.

The jail has no inotify channel to the host, so a watcher lists the directory (recursively
when asked) through the jail and diffs the listing with the previous one. The consequences,
also stated in the README: a file created and removed between two looks is not reported, a
rename shows as ``REMOVE`` + ``CREATE``, and a change is seen up to ``POLL_SECONDS`` late.
Event names are relative to the watched directory, as envd sends them.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb

from sandboxd.envd.entries import entry_info

if TYPE_CHECKING:
    from sandboxd.jail import Entry, Jail

POLL_SECONDS = 0.5
# How deep a recursive watch looks (a listing per poll: keep it bounded).
RECURSIVE_DEPTH = 16
# Unary (polling-API) watchers one sandbox may hold at once.
MAX_WATCHERS = 8
# The most entries a watched tree may hold.
MAX_WATCHED_ENTRIES = 10_000


class DirectoryPoller:
    """Successive listings of one directory and the events between them.

    ``start`` raises ``sandboxd.jail.FsError`` (not_found, …) for a bad path and
    ``ConnectError(INVALID_ARGUMENT)`` when it is not a directory.
    """

    def __init__(self, jail: Jail, path: str, *, recursive: bool, include_entry: bool) -> None:
        self._jail = jail
        self._path = path
        self._depth = RECURSIVE_DEPTH if recursive else 1
        self._include_entry = include_entry
        self._base = ""
        self._last: dict[str, Entry] = {}

    async def start(self) -> None:
        directory = await self._jail.stat(self._path)
        if directory.type != "dir":
            raise ConnectError(Code.INVALID_ARGUMENT, f"{self._path} is not a directory")
        self._base = directory.path
        self._last = await self._listing()

    async def _listing(self) -> dict[str, Entry]:
        entries = await self._jail.list_dir(self._base, self._depth)
        if len(entries) > MAX_WATCHED_ENTRIES:
            # Listing a tree this big every POLL_SECONDS would cost the whole machine.
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"{self._path} holds over {MAX_WATCHED_ENTRIES} entries, too many to watch "
                "by polling; watch a smaller directory",
            )
        return {posixpath.relpath(entry.path, self._base): entry for entry in entries}

    async def poll(self) -> list[filesystem_pb.FilesystemEvent]:
        """The events since the previous listing (raises ``FsError`` if the directory went)."""
        current = await self._listing()
        events = []
        for name in sorted(self._last.keys() | current.keys()):
            before, after = self._last.get(name), current.get(name)
            if before is None and after is not None:
                events.append(self._event(name, filesystem_pb.EventType.CREATE, after))
            elif after is None:
                events.append(self._event(name, filesystem_pb.EventType.REMOVE, None))
            elif before is not None and before.type != after.type:
                events.append(self._event(name, filesystem_pb.EventType.REMOVE, None))
                events.append(self._event(name, filesystem_pb.EventType.CREATE, after))
            elif before is not None and (
                before.size != after.size or before.modified_time != after.modified_time
            ):
                events.append(self._event(name, filesystem_pb.EventType.WRITE, after))
            elif before is not None and before.mode != after.mode:
                events.append(self._event(name, filesystem_pb.EventType.CHMOD, after))
        self._last = current
        return events

    def _event(
        self, name: str, kind: filesystem_pb.EventType, entry: Entry | None
    ) -> filesystem_pb.FilesystemEvent:
        info = entry_info(entry) if entry is not None and self._include_entry else None
        return filesystem_pb.FilesystemEvent(name=name, type=kind, entry=info)
