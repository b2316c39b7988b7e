"""The cgroup backends against the real kernel: v1 (this machine's memory/pids/cpu) and the
v2 code path on whatever unified hierarchy is mounted (on a hybrid host, one without
controllers: tracking and cgroup.kill still work; on a v2 host, the limits are written too)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.jail import Limits
from sandboxd.jail.cgroups import Cgroup, CgroupV2, backend_for, parent_name, v2_mount
from sandboxd.jail.testing import traversable_tmpdir


@pytest.fixture
def state_dir() -> Iterator[Path]:
    root = traversable_tmpdir("sj-cgroup-")
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def start_in(cgroup: Cgroup) -> subprocess.Popen[bytes]:
    """A sleeping process that joined the cgroup before exec (as a sandbox does)."""
    files = cgroup.procs_files()

    def join() -> None:
        for path in files:
            path.write_text(str(os.getpid()))

    return subprocess.Popen(["sleep", "300"], preexec_fn=join)


def test_the_parent_is_named_from_the_state_dir(tmp_path: Path) -> None:
    assert parent_name(tmp_path / "a") == parent_name(tmp_path / "a")
    assert parent_name(tmp_path / "a") != parent_name(tmp_path / "b")
    assert parent_name(tmp_path / "a").startswith("sandboxd-")


def test_the_machines_backend_writes_the_limits_and_tracks_processes(state_dir: Path) -> None:
    backend = backend_for(state_dir)
    cgroup = backend.create("t-limits", Limits(memory_bytes=64 << 20, pids=17, cpus=0.5))
    try:
        files = {c: d for c, d in cgroup.dirs.items() if c in ("memory", "pids", "cpu")}
        if backend.version == 1:
            assert (files["memory"] / "memory.limit_in_bytes").read_text() == f"{64 << 20}\n"
            assert (files["pids"] / "pids.max").read_text() == "17\n"
            assert (files["cpu"] / "cpu.cfs_quota_us").read_text() == "50000\n"
        else:
            assert (files["memory"] / "memory.max").read_text() == f"{64 << 20}\n"
            assert (files["pids"] / "pids.max").read_text() == "17\n"
            assert (files["cpu"] / "cpu.max").read_text() == "50000 100000\n"
        process = start_in(cgroup)
        assert cgroup.pids() == [process.pid]
    finally:
        assert cgroup.destroy()
    assert process.wait(5) == -9
    assert all(not d.exists() for d in cgroup.dirs.values())
    backend.remove_parents()
    assert all(not p.exists() for p in backend.parents.values())


def test_the_v2_code_path_tracks_kills_and_sweeps_on_the_unified_hierarchy(
    state_dir: Path,
) -> None:
    mount = v2_mount()
    assert mount is not None, "every kernel this runs on mounts a unified hierarchy"
    backend = CgroupV2(state_dir, root=mount)
    assert backend.parents, backend.problems
    cgroup = backend.create("t-v2", Limits())
    process = start_in(cgroup)
    directory = cgroup.dirs["tracking"]
    assert (directory / "cgroup.procs").read_text().split() == [str(process.pid)]
    # a server killed now would leave this behind; the next one's janitor sweeps it
    assert CgroupV2(state_dir, root=mount).sweep() == 1
    assert process.wait(5) == -9
    assert not directory.exists()
    backend.remove_parents()
    assert not backend.parents["tracking"].exists()


def test_a_removed_parent_is_recreated_by_the_next_create(state_dir: Path) -> None:
    backend = backend_for(state_dir)
    backend.remove_parents()
    cgroup = backend.create("t-again", Limits())
    assert all(d.is_dir() for d in cgroup.dirs.values())
    assert cgroup.destroy()
    backend.remove_parents()
