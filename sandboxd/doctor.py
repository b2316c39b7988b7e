"""`sandboxd doctor`: which protections are in force on this machine, and is it safe?

inspect_host() probes for real (it starts a throw-away bubblewrap as an unprivileged uid with
every namespace, the seccomp filter and --disable-userns) rather than trusting version numbers.
A host is `safe` when every sandbox can be isolated: running as root (to switch to per-sandbox
uids), bubblewrap with user namespaces, seccomp. cgroup controllers that are missing are
warnings: rlimits are the fallback (NPROC for pids), and the report says what is lost.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxd.jail import cgroups, seccomp
from sandboxd.jail.manager import SETUP_PATH, SETUP_TOOLS
from sandboxd.jail.uids import DEFAULT_UID_BASE, DEFAULT_UID_COUNT, LOCK_DIR

PROBE_UID = 65534  # nobody: the probe needs an unprivileged uid that no sandbox holds


@dataclass
class DoctorReport:
    """What inspect_host found. `safe` is False when a sandbox cannot be made safe here."""

    root: bool = False
    bwrap_path: str | None = None
    bwrap_version: str | None = None
    user_namespaces: bool = False
    seccomp: bool = False
    cgroup_version: int = 0
    cgroup_controllers: tuple[str, ...] = ()
    uid_range: tuple[int, int] = (DEFAULT_UID_BASE, DEFAULT_UID_BASE + DEFAULT_UID_COUNT - 1)
    state_dir: str | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not self.problems

    def text(self) -> str:
        """The human report, one finding per line, then the verdict."""
        verdict = (
            "verdict: SAFE - sandboxes can be isolated on this host"
            if self.safe
            else "verdict: UNSAFE - sandboxd will not start: " + "; ".join(self.problems)
        )
        return "\n".join([*self.lines, verdict])


def _ok(report: DoctorReport, text: str) -> None:
    report.lines.append(f"ok    {text}")


def _warn(report: DoctorReport, text: str) -> None:
    report.warnings.append(text)
    report.lines.append(f"warn  {text}")


def _fail(report: DoctorReport, text: str) -> None:
    report.problems.append(text)
    report.lines.append(f"FAIL  {text}")


def _probe_bwrap(bwrap: str) -> str | None:
    """Start bwrap as an unprivileged uid with all namespaces and the seccomp filter; return
    None on success or bwrap's error."""
    fds = seccomp.filter_fds()
    # As root, drop to the probe uid in the child (subprocess does it in C: no preexec_fn,
    # which is unsafe in a process with threads).
    drop: dict[str, Any] = (
        {"user": PROBE_UID, "group": PROBE_UID, "extra_groups": []} if os.geteuid() == 0 else {}
    )

    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
    argv += ["--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "lib", "lib64"):
        host = Path("/") / top
        if host.is_symlink():
            argv += ["--symlink", os.readlink(host), f"/{top}"]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), f"/{top}"]
    argv += ["--proc", "/proc"]
    for fd in fds:
        argv += ["--add-seccomp-fd", str(fd)]
    argv += ["--", "/bin/sh", "-c", "exit 0"]
    try:
        result = subprocess.run(
            argv,
            pass_fds=tuple(fds),
            **drop,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        for fd in fds:
            os.close(fd)
    if result.returncode != 0:
        return result.stderr.decode(errors="replace").strip() or f"exit {result.returncode}"
    return None


def _traversable(path: Path) -> Path | None:
    """The first ancestor of `path` that others cannot search (o+x), or None."""
    current = path.absolute()
    for directory in [*reversed(current.parents), current]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return None  # does not exist yet: created by us with the right mode
        if not mode & stat.S_IXOTH:
            return directory
    return None


def inspect_host(*, state_dir: Path | None = None, sandbox_env: Path | None = None) -> DoctorReport:
    """Probe this machine and return the report (never raises for a missing feature)."""
    report = DoctorReport()
    report.root = os.geteuid() == 0
    if report.root:
        _ok(report, "running as root: each sandbox gets its own unprivileged host uid")
    else:
        _fail(report, "not running as root: cannot run each sandbox as its own unprivileged uid")

    base, last = report.uid_range
    _ok(report, f"sandbox uids {base}-{last}, leased machine-wide with locks in {LOCK_DIR}")

    try:
        seccomp.filter_bpf()
        report.seccomp = Path("/proc/self/status").read_text().find("Seccomp:") >= 0
    except seccomp.SeccompUnavailableError as exc:
        _fail(report, str(exc))
    else:
        if report.seccomp:
            _ok(report, f"seccomp: {seccomp.profile()}")
        else:
            _fail(report, "the kernel does not support seccomp")

    missing = [tool for tool in SETUP_TOOLS if shutil.which(tool, path=SETUP_PATH) is None]
    if missing:
        _fail(
            report, f"{', '.join(missing)} not found: sandboxes are set up with them (util-linux)"
        )
    else:
        _ok(report, f"{', '.join(SETUP_TOOLS)} present: bubblewrap starts unprivileged")

    report.bwrap_path = shutil.which("bwrap")
    if report.bwrap_path is None:
        _fail(report, "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)")
    else:
        version = subprocess.run(
            [report.bwrap_path, "--version"], capture_output=True, text=True, check=False
        )
        report.bwrap_version = version.stdout.strip().removeprefix("bubblewrap ") or None
        _ok(report, f"bubblewrap {report.bwrap_version} at {report.bwrap_path}")
        max_ns = Path("/proc/sys/user/max_user_namespaces")
        if max_ns.exists() and max_ns.read_text().strip() == "0":
            _fail(report, "user namespaces are disabled (user.max_user_namespaces = 0)")
        elif report.seccomp:
            error = _probe_bwrap(report.bwrap_path)
            if error is None:
                report.user_namespaces = True
                _ok(
                    report,
                    "user namespaces: an unprivileged bubblewrap starts with every namespace, "
                    "seccomp and --disable-userns",
                )
            else:
                _fail(report, f"bubblewrap cannot create a sandbox here: {error[:300]}")

    report.cgroup_version = cgroups.detect_version()
    if state_dir is not None:
        backend = cgroups.backend_for(state_dir)
        report.cgroup_controllers = backend.controllers
        for problem in backend.problems:
            _warn(report, problem)
    else:
        report.cgroup_controllers = _controllers_visible(report.cgroup_version)
    if report.cgroup_version == 0:
        _warn(report, "no cgroups: only rlimits limit a sandbox (no memory or CPU cap)")
    else:
        _ok(
            report,
            f"cgroup v{report.cgroup_version}; usable controllers: "
            + (", ".join(report.cgroup_controllers) or "none"),
        )
        missing = [c for c in cgroups.CONTROLLERS if c not in report.cgroup_controllers]
        if "pids" in missing:
            _warn(report, "no pids controller: RLIMIT_NPROC (per sandbox uid) is the fallback")
        if "memory" in missing:
            _warn(report, "no memory controller: a sandbox's memory is not capped")
        if "cpu" in missing:
            _warn(report, "no cpu controller: a sandbox's CPU share is not capped")

    for label, path in (("state dir", state_dir), ("sandbox env", sandbox_env)):
        if path is None:
            continue
        blocked = _traversable(path)
        if blocked is None:
            _ok(report, f"{label} {path} is traversable by sandbox uids")
        else:
            # bwrap resolves every bind source as the sandbox's uid, even one passed as an fd.
            _fail(
                report,
                f"{label} {path} is not reachable by sandbox uids: {blocked} is not searchable "
                "by others (chmod o+x, or choose a path outside it)",
            )
    if state_dir is not None:
        report.state_dir = str(state_dir)
    return report


def _controllers_visible(version: int) -> tuple[str, ...]:
    if version == 2:
        try:
            available = (cgroups.CGROUP_ROOT / "cgroup.controllers").read_text().split()
        except OSError:
            return ()
        return tuple(c for c in cgroups.CONTROLLERS if c in available)
    if version == 1:
        return tuple(c for c in cgroups.CONTROLLERS if cgroups._v1_mount(c) is not None)
    return ()
