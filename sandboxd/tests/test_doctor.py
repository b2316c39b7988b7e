"""`doctor` tells the truth about this machine, checked against independent observations."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from sandboxd.doctor import inspect_host
from sandboxd.jail import cgroups

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_it_reports_this_machine_as_safe_with_what_is_in_force() -> None:
    report = inspect_host()
    assert report.safe, report.text()
    assert report.root is (os.geteuid() == 0)
    assert report.bwrap_path == shutil.which("bwrap")
    version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.split()[-1] == report.bwrap_version
    assert report.user_namespaces and report.seccomp
    assert report.text().endswith("verdict: SAFE - sandboxes can be isolated on this host")


def test_it_names_the_cgroup_version_and_usable_controllers() -> None:
    report = inspect_host()
    fs_type = subprocess.run(
        ["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True, check=True
    ).stdout.strip()
    expected_version = 2 if fs_type == "cgroup2fs" else 1
    assert report.cgroup_version == expected_version
    if expected_version == 1:
        mounted = {
            c for c in cgroups.CONTROLLERS if (Path("/sys/fs/cgroup") / c / "tasks").exists()
        }
        assert set(report.cgroup_controllers) == mounted
    assert f"cgroup v{expected_version}; usable controllers:" in report.text()


def test_a_state_dir_under_an_untraversable_directory_is_unsafe() -> None:
    closed = Path(tempfile.mkdtemp(prefix="sj-doctor-"))  # 0700
    try:
        report = inspect_host(state_dir=closed / "state")
        assert not report.safe
        assert any("not reachable by sandbox uids" in p for p in report.problems)
        assert "verdict: UNSAFE" in report.text()
    finally:
        shutil.rmtree(closed)


def test_without_root_it_says_a_sandbox_cannot_be_made_safe() -> None:
    # The host venv's interpreter lives under root's 0700 home here: run the system one with
    # the project and the venv's packages on its path.
    site_packages = next((PROJECT_ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    result = subprocess.run(
        [
            "/usr/bin/python3",
            "-c",
            "from sandboxd.doctor import inspect_host\nr = inspect_host()\n"
            "print(r.safe)\nprint(r.text())",
        ],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": f"{PROJECT_ROOT}:{site_packages}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        user=65534,
        group=65534,
        extra_groups=[],
    )
    assert result.stdout.splitlines()[0] == "False", result.stderr
    assert "FAIL  not running as root" in result.stdout
    assert "seccomp: allow-list" in result.stdout  # the rest is still reported


def test_without_the_tools_that_start_bubblewrap_it_is_unsafe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sandboxd.doctor.SETUP_PATH", str(tmp_path))  # where none of them is
    report = inspect_host()
    assert not report.safe
    assert any(p.startswith("sh, prlimit, setpriv not found") for p in report.problems)
