"""Pause and resume through the real SDK (sync and async) against a real sandboxd: the
workspace and the packages installed in it come back, nothing runs while paused, auto-pause
at the timeout, and paused sandboxes survive a restart of sandboxd."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

import pytest
from e2b import AsyncSandbox, SandboxQuery, SandboxState
from e2b_code_interpreter import Sandbox

from sandboxd.testing import RunningSandboxd, running_sandboxd, wait_until
from sandboxd.tests.conftest import make_state_dir

pytestmark = pytest.mark.sandboxd

PACKAGE_DIR = "/home/user/.local/lib/python-packages/pausedpkg"


def _fill(sandbox: Sandbox) -> None:
    """Files, a tree, a link and an installed package (as pip lays one out)."""
    sandbox.files.write("notes/today.txt", "kept across the pause")
    sandbox.files.write(f"{PACKAGE_DIR}/__init__.py", "ANSWER = 42\n")
    sandbox.commands.run("ln -s notes/today.txt link && chmod 600 notes/today.txt")
    sandbox.run_code("lost = 'kernel state'")


def _check(sandbox: Sandbox) -> None:
    assert sandbox.files.read("notes/today.txt") == "kept across the pause"
    assert sandbox.commands.run("readlink link; stat -c %a notes/today.txt").stdout == (
        "notes/today.txt\n600\n"
    )
    assert sandbox.run_code("import pausedpkg; pausedpkg.ANSWER").text == "42"
    # kernels start fresh: variables do not survive a pause
    assert sandbox.run_code("lost").error.name == "NameError"


def test_a_paused_sandbox_holds_nothing_and_resumes_with_its_workspace(
    sandboxd: RunningSandboxd,
) -> None:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    try:
        _fill(sandbox)
        sandbox.pause()
        assert sandbox.is_running() is False
        [listed] = Sandbox.list(
            query=SandboxQuery(state=[SandboxState.PAUSED]), **sandboxd.sdk_options()
        ).next_items()
        assert (listed.sandbox_id, listed.state) == (sandbox.sandbox_id, SandboxState.PAUSED)

        resumed = Sandbox.connect(sandbox.sandbox_id, **sandboxd.sdk_options())
        assert resumed.sandbox_id == sandbox.sandbox_id
        assert resumed.is_running() is True
        _check(resumed)
    finally:
        Sandbox.kill(sandbox.sandbox_id, **sandboxd.sdk_options())


async def test_auto_pause_at_the_timeout_then_connect_resumes(sandboxd: RunningSandboxd) -> None:
    sandbox = await AsyncSandbox.create(
        timeout=3, lifecycle={"on_timeout": "pause"}, **sandboxd.sdk_options()
    )
    try:
        await sandbox.files.write("auto.txt", "paused by its timeout")
        info = None
        for _ in range(100):
            info = await AsyncSandbox.get_info(sandbox.sandbox_id, **sandboxd.sdk_options())
            if info.state == SandboxState.PAUSED:
                break
            await asyncio.sleep(0.2)
        assert info is not None and info.state == SandboxState.PAUSED
        resumed = await AsyncSandbox.connect(sandbox.sandbox_id, **sandboxd.sdk_options())
        assert await resumed.files.read("auto.txt") == "paused by its timeout"
    finally:
        await AsyncSandbox.kill(sandbox.sandbox_id, **sandboxd.sdk_options())


def test_killing_a_paused_sandbox_removes_its_workspace(sandboxd: RunningSandboxd) -> None:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    sandbox.files.write("gone.txt", "x")
    sandbox.pause()
    assert Sandbox.kill(sandbox.sandbox_id, **sandboxd.sdk_options()) is True
    assert Sandbox.kill(sandbox.sandbox_id, **sandboxd.sdk_options()) is False
    with pytest.raises(Exception, match="not found"):
        Sandbox.connect(sandbox.sandbox_id, **sandboxd.sdk_options())


def test_paused_sandboxes_survive_a_restart_of_sandboxd() -> None:
    state_dir = make_state_dir()
    api_key = "restart-" + secrets.token_hex(8)
    try:
        with running_sandboxd(
            state_dir=state_dir, api_key=api_key, env={"SANDBOXD_POOL_SIZE": "0"}
        ) as first:
            sandbox = Sandbox.create(**first.sdk_options())
            _fill(sandbox)
            sandbox.pause()
            kept = sorted(p.name for p in (state_dir / "paused" / sandbox.sandbox_id).iterdir())
            assert kept == ["record.json", "workspace.tar"]
        with running_sandboxd(
            state_dir=state_dir, api_key=api_key, env={"SANDBOXD_POOL_SIZE": "0"}
        ) as second:
            resumed = Sandbox.connect(sandbox.sandbox_id, **second.sdk_options())
            _check(resumed)
            resumed.kill()
            assert wait_until(lambda: not (state_dir / "paused" / sandbox.sandbox_id).exists(), 5)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def test_the_paused_directory_is_the_hosts_only(sandboxd: RunningSandboxd) -> None:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    try:
        sandbox.pause()
        state_dirs = [p for p in Path("/tmp").glob("sandboxd-test-*") if (p / "paused").is_dir()]
        assert state_dirs and all(
            (p / "paused").stat().st_mode & 0o777 == 0o700 for p in state_dirs
        )
    finally:
        Sandbox.kill(sandbox.sandbox_id, **sandboxd.sdk_options())


def test_set_timeout_zero_ends_the_sandbox_now_or_pauses_it(sandboxd: RunningSandboxd) -> None:
    pausing = Sandbox.create(lifecycle={"on_timeout": "pause"}, **sandboxd.sdk_options())
    ending = Sandbox.create(**sandboxd.sdk_options())
    try:
        pausing.set_timeout(0)
        ending.set_timeout(0)

        def paused() -> bool:
            try:
                info = Sandbox.get_info(pausing.sandbox_id, **sandboxd.sdk_options())
            except Exception:  # between running and paused it is briefly neither
                return False
            return info.state == SandboxState.PAUSED

        assert wait_until(lambda: paused() and not ending.is_running(), 30)
        assert Sandbox.kill(ending.sandbox_id, **sandboxd.sdk_options()) is False
    finally:
        Sandbox.kill(pausing.sandbox_id, **sandboxd.sdk_options())
