"""Value types of the jail API: limits, directory entries, process events and errors.

These are what the rest of sandboxd sees of a sandbox; nothing here touches the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from sandboxd.doctor import DoctorReport

FS_ERROR_CODES = frozenset(
    {
        "not_found",
        "already_exists",
        "invalid_argument",
        "permission_denied",
        "resource_exhausted",
        "internal",
    }
)


@dataclass(frozen=True)
class Limits:
    """Per-sandbox resource limits; the defaults are safe for an untrusted program."""

    memory_bytes: int = 1 << 30  # cgroup memory (+swap where the kernel accounts it)
    pids: int = 256  # processes and threads together
    cpus: float = 1.0  # CPU quota, in cores
    tmp_bytes: int = 256 << 20  # size of the tmpfs /tmp
    workspace_bytes: int = 1 << 30  # size of the tmpfs /home/user
    file_size_bytes: int = 512 << 20  # RLIMIT_FSIZE
    open_files: int = 1024  # RLIMIT_NOFILE

    def __post_init__(self) -> None:
        """Refuse values that would disable a protection (zero or negative)."""
        for name in (
            "memory_bytes",
            "pids",
            "tmp_bytes",
            "workspace_bytes",
            "file_size_bytes",
            "open_files",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        if not self.cpus > 0:
            raise ValueError(f"Limits.cpus must be positive, got {self.cpus!r}")


@dataclass(frozen=True)
class Entry:
    """One file-system object as the sandbox sees it, described as envd does: a symlink has
    its target's ``type`` (``file`` when dangling), ``is_symlink`` set and the resolved
    absolute ``symlink_target``."""

    name: str
    type: Literal["file", "dir", "symlink"]
    path: str
    size: int
    mode: int
    permissions: str
    owner: str
    group: str
    modified_time: datetime
    symlink_target: str | None
    is_symlink: bool = False


@dataclass(frozen=True)
class ProcEvent:
    """Output of a spawned process, or its single final exit event."""

    kind: Literal["stdout", "stderr", "exit"]
    data: bytes = b""
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False


@dataclass(frozen=True)
class ProcessInfo:
    """A live process started with Jail.spawn."""

    pid: int
    tag: str | None
    argv: tuple[str, ...]
    envs: dict[str, str] = field(default_factory=dict)
    cwd: str = "/home/user"


class FsError(Exception):
    """A file or process operation failed; `code` is one of FS_ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        if code not in FS_ERROR_CODES:
            code = "internal"
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class JailError(Exception):
    """The sandbox itself failed (could not start, or its agent died)."""

    def __init__(self, message: str, code: str = "jail_failed") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnsafeHostError(JailError):
    """This host cannot run a sandbox safely; `report` says why (see sandboxd.doctor)."""

    def __init__(self, report: DoctorReport) -> None:
        problems = "; ".join(report.problems) or "unknown reason"
        super().__init__(f"a sandbox cannot be made safe on this host: {problems}", "unsafe_host")
        self.report = report
