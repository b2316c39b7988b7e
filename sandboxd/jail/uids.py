"""Unprivileged host uids for sandboxes, one per live sandbox, machine-wide.

Each uid is held with an exclusive flock on /run/sandboxd/uids/<uid>.lock for the sandbox's
lifetime. The kernel drops the lock when the holder dies, so two sandboxd instances on one
machine (or one that was killed) never hand out the same uid twice while it is in use.
"""

from __future__ import annotations

import fcntl
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

DEFAULT_UID_BASE = 200_000
DEFAULT_UID_COUNT = 10_000
LOCK_DIR = Path("/run/sandboxd/uids")


class UidsExhaustedError(Exception):
    """Every uid of the range is in use."""


@dataclass
class UidLease:
    """A uid held for one sandbox; release() gives it back."""

    uid: int
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


class UidPool:
    """Hands out uids in [base, base + count) that no account on the host uses."""

    def __init__(
        self,
        base: int = DEFAULT_UID_BASE,
        count: int = DEFAULT_UID_COUNT,
        lock_dir: Path = LOCK_DIR,
    ) -> None:
        if base < 1000 or count < 1:
            raise ValueError("the uid range must be unprivileged and non-empty")
        self.base = base
        self.count = count
        self.lock_dir = lock_dir
        self._next = 0

    def allocate(self) -> UidLease:
        """Return a lease on a free uid; raise UidsExhaustedError when none is free."""
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for step in range(self.count):
            offset = (self._next + step) % self.count
            uid = self.base + offset
            if _is_account(uid):
                continue  # a real user's files could be reached through it
            fd = os.open(
                self.lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._next = offset + 1
            return UidLease(uid, fd)
        raise UidsExhaustedError(f"all {self.count} sandbox uids from {self.base} are in use")


def _is_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
