"""Directory watches for the agent, on Linux inotify (standard library only: ctypes).

One ``Watch`` per watch stream or watcher: its own inotify instance, a watch on the directory
and, when recursive, on every directory below it (added as they appear). Events come out as
``(kind, name, is_dir)`` with names relative to the watched directory and envd's kinds (it uses
fsnotify, which maps inotify the same way): IN_CREATE/IN_MOVED_TO -> create, IN_MODIFY ->
write, IN_DELETE -> remove, IN_MOVED_FROM -> rename, IN_ATTRIB -> chmod. A directory's own
mtime change is no event, as with inotify.

Bounded: ``max_dirs`` directories per watch (inotify watches cost kernel memory: ~1 KiB each,
and the kernel's per-uid limit is shared by the sandbox's processes) and ``max_pending``
events waiting for the host; past either the watch is marked ``overflowed`` and stops.
"""

from __future__ import annotations

import ctypes
import os
import struct

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int) -> int:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result


def kind_of(mask: int) -> str | None:
    if mask & (IN_CREATE | IN_MOVED_TO):
        return "create"
    if mask & IN_MODIFY:
        return "write"
    if mask & IN_DELETE:
        return "remove"
    if mask & IN_MOVED_FROM:
        return "rename"
    if mask & IN_ATTRIB:
        return "chmod"
    return None


class WatchOverflow(Exception):
    """The watch exceeded one of its bounds."""


class Watch:
    """One inotify instance over a directory (and its subdirectories when recursive)."""

    def __init__(self, root: str, *, recursive: bool, max_dirs: int, max_pending: int) -> None:
        self.root = root
        self.recursive = recursive
        self.max_dirs = max_dirs
        self.max_pending = max_pending
        self.fd = _check(_lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        self.dirs: dict[int, str] = {}  # wd -> directory path
        self.pending: list[list] = []
        self.overflowed: str | None = None
        try:
            self._add(root)
            if recursive:
                self._add_tree(root)
        except BaseException:
            os.close(self.fd)
            raise

    def _add(self, directory: str) -> None:
        if len(self.dirs) >= self.max_dirs:
            raise WatchOverflow(f"over {self.max_dirs} directories to watch")
        wd = _check(
            _lib().inotify_add_watch(
                self.fd, os.fsencode(directory), MASK | IN_ONLYDIR | IN_DONT_FOLLOW
            )
        )
        self.dirs[wd] = directory

    def _add_tree(self, top: str) -> None:
        for current, subdirs, _files in os.walk(top):
            for name in subdirs:
                path = os.path.join(current, name)
                if not os.path.islink(path):
                    self._add(path)

    def read(self) -> None:
        """Read what the kernel queued into ``pending`` (non-blocking)."""
        while self.overflowed is None:
            try:
                data = os.read(self.fd, 64 << 10)
            except BlockingIOError:
                return
            if not data:
                return
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self.overflowed = "the kernel dropped events (too many changes at once)"
                return
            if mask & IN_IGNORED:
                self.dirs.pop(wd, None)
                continue
            directory = self.dirs.get(wd)
            kind = kind_of(mask)
            if directory is None or kind is None or not raw:
                continue
            path = os.path.join(directory, os.fsdecode(raw))
            is_dir = bool(mask & IN_ISDIR)
            self.pending.append([kind, os.path.relpath(path, self.root), is_dir])
            if self.recursive and is_dir and kind == "create":
                try:
                    self._add(path)
                    self._add_tree(path)
                except WatchOverflow as exc:
                    self.overflowed = str(exc)
                    return
                except OSError:
                    pass  # gone again already
            if len(self.pending) > self.max_pending:
                self.overflowed = f"over {self.max_pending} events waiting for the client"
                return

    def take(self) -> list[list]:
        events, self.pending = self.pending, []
        return events

    def close(self) -> None:
        os.close(self.fd)
