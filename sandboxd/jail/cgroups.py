"""Per-sandbox cgroups for memory, pids and CPU, on cgroup v1 and v2, behind one interface.

Layout: <our own cgroup>/sandboxd-<hash of the state dir>/<sandbox id>, per controller on v1
(this machine: memory, pids and cpu are separate hierarchies) or once on v2 (a delegated
subtree: the sandboxes are leaves, the server never lives in them). Naming the parent after the
state dir keeps two servers' janitors from touching each other's sandboxes; nesting it under
our own cgroup keeps the sandboxes inside whatever limits the server itself was given.

A process joins before it execs (see Cgroup.procs_files), so nothing can fork its way out.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from sandboxd.jail.types import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
# v1 only: CPU time is counted by cpuacct, which may be mounted apart from cpu (it is on this
# kind of machine). It limits nothing, so a host without it only loses the CPU reading.
V1_ACCOUNTING = "cpuacct"
CPU_PERIOD_US = 100_000
TRACKING = "tracking"  # v2: the sandbox's cgroup itself, whatever controllers it has


def parent_name(state_dir: Path) -> str:
    """The cgroup parent's name for a state dir: stable, and distinct per state dir."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return f"sandboxd-{digest}"


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_counter(path: Path, key: str) -> int:
    """Return the value of `key` in a flat-keyed cgroup file (0 if absent)."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return 0
    return 0


def _pids_in(path: Path) -> list[int]:
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _kill_and_remove(directory: Path, kill_file: bool, deadline: float) -> bool:
    """SIGKILL everything in `directory` until it is empty, then rmdir it; True if removed."""
    while True:
        if kill_file and (directory / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(directory / "cgroup.kill", "1")
        for pid in _pids_in(directory):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            directory.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                return False
        time.sleep(0.005)  # killed tasks leave the cgroup asynchronously


@dataclass
class Cgroup:
    """One sandbox's cgroup (one directory per controller on v1, one on v2)."""

    dirs: dict[str, Path]  # controller -> directory (v2: all map to the same directory)
    version: int

    def procs_files(self) -> list[Path]:
        """Files to write a pid into to join (each distinct directory once)."""
        return [d / "cgroup.procs" for d in dict.fromkeys(self.dirs.values())]

    def oom_kills(self) -> int:
        """OOM kills in this cgroup so far."""
        directory = self.dirs.get("memory")
        if directory is None:
            return 0
        if self.version == 1:
            return _read_counter(directory / "memory.oom_control", "oom_kill")
        return _read_counter(directory / "memory.events", "oom_kill")

    def pids_limit_hits(self) -> int:
        """Forks refused at pids.max so far."""
        directory = self.dirs.get("pids")
        if directory is None:
            return 0
        return _read_counter(directory / "pids.events", "max")

    def pids(self) -> list[int]:
        """Host pids currently in the cgroup."""
        found: set[int] = set()
        for directory in dict.fromkeys(self.dirs.values()):
            found.update(_pids_in(directory))
        return sorted(found)

    def destroy(self, timeout: float = 5.0) -> bool:
        """Kill every process in it and remove it; True when nothing is left."""
        deadline = time.monotonic() + timeout
        ok = True
        for directory in dict.fromkeys(self.dirs.values()):
            ok = _kill_and_remove(directory, self.version == 2, deadline) and ok
        return ok


class CgroupBackend:
    """Creates sandbox cgroups under the parent named from the state dir."""

    version = 0

    def __init__(self, state_dir: Path) -> None:
        self.parent = parent_name(state_dir)
        self.parents: dict[str, Path] = {}  # usable controller -> parent directory
        self.problems: list[str] = []

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(c for c in CONTROLLERS if c in self.parents)

    def create(self, name: str, limits: Limits) -> Cgroup:
        raise NotImplementedError

    def remove_parents(self) -> None:
        """Remove our parent cgroups if no sandbox is left in them (at server shutdown)."""
        for parent in dict.fromkeys(self.parents.values()):
            with contextlib.suppress(OSError):
                parent.rmdir()

    def sweep(self) -> int:
        """Remove every sandbox cgroup under our parent (and their processes); return count."""
        removed = 0
        deadline = time.monotonic() + 10.0
        for parent in dict.fromkeys(self.parents.values()):
            try:
                children = [p for p in parent.iterdir() if p.is_dir()]
            except OSError:
                continue
            for child in children:
                if _kill_and_remove(child, self.version == 2, deadline):
                    removed += 1
        return removed


class CgroupV1(CgroupBackend):
    """Hybrid or legacy hierarchy: one mount per controller under /sys/fs/cgroup."""

    version = 1

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        own = _own_cgroups()
        for controller in CONTROLLERS:
            mount = _v1_mount(controller)
            if mount is None:
                self.problems.append(f"cgroup v1 controller {controller} is not mounted")
                continue
            base = mount / own.get(controller, "/").lstrip("/")
            parent = base / self.parent
            try:
                parent.mkdir(exist_ok=True)
            except OSError as exc:
                self.problems.append(f"cannot create {parent}: {exc.strerror}")
                continue
            self.parents[controller] = parent
        mount = _v1_mount(V1_ACCOUNTING)
        if mount is not None:
            parent = mount / own.get(V1_ACCOUNTING, "/").lstrip("/") / self.parent
            with contextlib.suppress(OSError):
                parent.mkdir(exist_ok=True)
                self.parents[V1_ACCOUNTING] = parent

    def create(self, name: str, limits: Limits) -> Cgroup:
        dirs: dict[str, Path] = {}
        for controller, parent in self.parents.items():
            directory = parent / name
            directory.mkdir(parents=True, exist_ok=True)  # (re-)creates a removed parent
            dirs[controller] = directory
        if "memory" in dirs:
            mem = dirs["memory"]
            _write(mem / "memory.limit_in_bytes", str(limits.memory_bytes))
            if (mem / "memory.memsw.limit_in_bytes").exists():
                # memory+swap = memory: a sandbox cannot push its pages out to swap.
                _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        if "pids" in dirs:
            _write(dirs["pids"] / "pids.max", str(limits.pids))
        if "cpu" in dirs:
            _write(dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(dirs["cpu"] / "cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US)))
        return Cgroup(dirs, 1)


class CgroupV2(CgroupBackend):
    """Unified hierarchy: memory.max, memory.swap.max, pids.max, cpu.max, cgroup.kill."""

    version = 2

    def __init__(self, state_dir: Path, root: Path = CGROUP_ROOT) -> None:
        """`root` is the unified hierarchy's mount (/sys/fs/cgroup on a v2 machine)."""
        super().__init__(state_dir)
        own = _own_cgroups().get("", "/")
        base = root / own.lstrip("/")
        parent = base / self.parent
        try:
            available = set((base / "cgroup.controllers").read_text().split())
            wanted = [c for c in CONTROLLERS if c in available]
            for c in CONTROLLERS:
                if c not in available:
                    self.problems.append(f"cgroup v2 controller {c} is not delegated to {base}")
            _enable_v2(base, wanted)
            parent.mkdir(exist_ok=True)
            _enable_v2(parent, wanted)
        except OSError as exc:
            self.problems.append(f"cannot set up cgroup v2 under {base}: {exc.strerror}")
            return
        # Even with no controller the sandbox gets a cgroup: it tracks every process of the
        # sandbox and cgroup.kill ends them all at once.
        self.parents[TRACKING] = parent
        for controller in wanted:
            self.parents[controller] = parent

    def create(self, name: str, limits: Limits) -> Cgroup:
        if not self.parents:
            return Cgroup({}, 2)
        parent = self.parents[TRACKING]
        if not parent.exists():  # removed by remove_parents(): set it up again
            parent.mkdir()
            _enable_v2(parent, [c for c in CONTROLLERS if c in self.parents])
        directory = parent / name
        directory.mkdir(exist_ok=True)
        if "memory" in self.parents:
            _write(directory / "memory.max", str(limits.memory_bytes))
            if (directory / "memory.swap.max").exists():
                _write(directory / "memory.swap.max", "0")
        if "pids" in self.parents:
            _write(directory / "pids.max", str(limits.pids))
        if "cpu" in self.parents:
            _write(directory / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        return Cgroup(dict.fromkeys(self.parents, directory), 2)


def _enable_v2(directory: Path, controllers: list[str]) -> None:
    """Enable controllers for the children of `directory`. If the no-internal-process rule
    refuses (EBUSY: we live in it), move this server process into a leaf beside the parent."""
    if not controllers:
        return
    request = " ".join(f"+{c}" for c in controllers)
    try:
        _write(directory / "cgroup.subtree_control", request)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        leaf = directory / "sandboxd-server"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(directory / "cgroup.subtree_control", request)


def _own_cgroups() -> dict[str, str]:
    """Controller -> our cgroup path, from /proc/self/cgroup ('' is the v2 hierarchy)."""
    result: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _hid, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                result[controller] = path
    return result


def _v1_mount(controller: str) -> Path | None:
    """Mount point of the v1 hierarchy carrying `controller`, from /proc/self/mountinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields = right.split()
            if len(fields) >= 3 and fields[0] == "cgroup":
                options = fields[2].split(",")
                if controller in options:
                    return Path(left.split()[4])
    return None


def v2_mount() -> Path | None:
    """Where the unified (v2) hierarchy is mounted, if anywhere (a hybrid host has one too)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                return Path(left.split()[4])
    return None


def detect_version() -> int:
    """2 on a pure unified hierarchy, 1 when v1 controllers are mounted, 0 with none."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # the unified hierarchy is the root
        return 2
    if any(_v1_mount(c) for c in CONTROLLERS):
        return 1
    return 0


def backend_for(state_dir: Path) -> CgroupBackend:
    """The backend for this machine (v2, v1, or one with no controllers at all)."""
    version = detect_version()
    if version == 2:
        return CgroupV2(state_dir)
    if version == 1:
        return CgroupV1(state_dir)
    backend = CgroupBackend(state_dir)
    backend.problems.append("no cgroup hierarchy with memory, pids or cpu is mounted")
    return backend
