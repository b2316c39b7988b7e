"""The control plane through the real E2B SDK (sync and async) against a real sandboxd:
create, connect, set_timeout, kill, info, list; auth, unknown sandboxes, the cap, expiry."""

from __future__ import annotations

import os
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from e2b import AsyncSandbox, Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import (
    AuthenticationException,
    RateLimitException,
    SandboxNotFoundException,
    SandboxNotRunningException,
)
from e2b_code_interpreter import AsyncSandbox as AsyncCodeSandbox
from e2b_code_interpreter import Sandbox as CodeSandbox

from sandboxd.testing import RunningSandboxd, wait_until

pytestmark = pytest.mark.sandboxd


def assert_healthy(server: RunningSandboxd) -> None:
    """The server still answers after whatever the test did to it."""
    assert server.alive()
    assert httpx.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"


def host_processes_with(argv: list[str]) -> list[int]:
    """Host pids whose command line is exactly ``argv`` (sandboxes are visible from the host)."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == wanted:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_it_creates_a_sandbox_that_reports_its_metadata_and_lifetime(
    sandboxd: RunningSandboxd,
) -> None:
    sandbox = Sandbox.create(timeout=120, metadata={"owner": "alice"}, **sandboxd.sdk_options())
    try:
        info = sandbox.get_info()
        assert info.sandbox_id == sandbox.sandbox_id
        assert info.metadata == {"owner": "alice"}
        assert info.state == SandboxState.RUNNING
        assert 110 <= (info.end_at - info.started_at).total_seconds() <= 121
        assert sandbox.is_running()
    finally:
        assert sandbox.kill() is True
    assert not sandbox.is_running()


def test_it_applies_create_envs_to_commands(sandboxd: RunningSandboxd) -> None:
    with Sandbox.create(envs={"GREETING": "hello from create"}, **sandboxd.sdk_options()) as sb:
        assert sb.commands.run("echo $GREETING").stdout == "hello from create\n"


def test_a_code_interpreter_sandbox_runs_python_with_its_create_envs(
    sandboxd: RunningSandboxd,
) -> None:
    with CodeSandbox.create(envs={"FROM_CREATE": "yes"}, **sandboxd.sdk_options()) as sandbox:
        assert sandbox.get_info().template_id == "code-interpreter-v1"
        execution = sandbox.run_code("import os\nos.environ['FROM_CREATE'] == 'yes'")
        assert execution.error is None
        assert execution.text == "True"
        assert sandbox.commands.run("echo $FROM_CREATE").stdout == "yes\n"


async def test_the_async_code_interpreter_sdk_gets_a_first_result(
    sandboxd: RunningSandboxd,
) -> None:
    sandbox = await AsyncCodeSandbox.create(**sandboxd.sdk_options())
    try:
        execution = await sandbox.run_code("print(6 * 7)")
        assert execution.logs.stdout == ["42\n"]
    finally:
        await sandbox.kill()


def test_connect_returns_the_same_sandbox_with_working_tokens(sandboxd: RunningSandboxd) -> None:
    with Sandbox.create(**sandboxd.sdk_options()) as original:
        original.files.write("marker.txt", "same sandbox")
        again = Sandbox.connect(original.sandbox_id, **sandboxd.sdk_options())
        assert again.sandbox_id == original.sandbox_id
        assert again.files.read("marker.txt") == "same sandbox"


def test_connect_only_lengthens_a_running_sandboxs_lifetime(sandboxd: RunningSandboxd) -> None:
    with Sandbox.create(timeout=600, **sandboxd.sdk_options()) as sandbox:
        before = sandbox.get_info().end_at
        Sandbox.connect(sandbox.sandbox_id, timeout=30, **sandboxd.sdk_options())
        assert sandbox.get_info().end_at == before
        Sandbox.connect(sandbox.sandbox_id, timeout=1200, **sandboxd.sdk_options())
        assert sandbox.get_info().end_at > before


def test_set_timeout_moves_the_end_time(sandboxd: RunningSandboxd) -> None:
    with Sandbox.create(timeout=60, **sandboxd.sdk_options()) as sandbox:
        sandbox.set_timeout(900)
        info = sandbox.get_info()
        remaining = (info.end_at - info.started_at).total_seconds()
        assert 890 <= remaining <= 905


def test_a_sandbox_dies_at_its_timeout_with_its_processes(sandboxd: RunningSandboxd) -> None:
    sandbox = Sandbox.create(timeout=2, **sandboxd.sdk_options())
    argv = ["sleep", "31337"]
    sandbox.commands.run(" ".join(argv), background=True)
    assert wait_until(lambda: host_processes_with(argv), 5)
    assert wait_until(lambda: not sandbox.is_running(), 10)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sandbox.sandbox_id, **sandboxd.sdk_options())
    assert wait_until(lambda: not host_processes_with(argv), 5)
    assert_healthy(sandboxd)


def jail_processes(sandbox_id: str) -> list[int]:
    """Host pids of the bubblewrap running this sandbox (its argv names the sandbox's dir)."""
    marker = f"/jails/{sandbox_id}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"/usr/bin/bwrap\0") and marker in cmdline:
                found.append(int(entry.name))
    return found


def test_a_sandbox_that_dies_on_its_own_is_reported_gone(sandboxd: RunningSandboxd) -> None:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    victims = jail_processes(sandbox.sandbox_id)
    assert victims, "the sandbox's bubblewrap should be visible from the host"
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not sandbox.is_running(), 10)
    with pytest.raises(SandboxNotRunningException):
        sandbox.files.read("anything.txt")
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sandbox.sandbox_id, **sandboxd.sdk_options())
    with Sandbox.create(**sandboxd.sdk_options()) as fresh:
        assert fresh.commands.run("echo fine").stdout == "fine\n"
    assert_healthy(sandboxd)


def test_set_timeout_keeps_a_sandbox_alive_past_its_first_timeout(
    sandboxd: RunningSandboxd,
) -> None:
    sandbox = Sandbox.create(timeout=2, **sandboxd.sdk_options())
    try:
        sandbox.set_timeout(60)
        time.sleep(3)
        assert sandbox.is_running()
    finally:
        sandbox.kill()


def test_concurrent_creates_get_distinct_working_sandboxes(sandboxd: RunningSandboxd) -> None:
    def create_and_use(index: int) -> str:
        with Sandbox.create(**sandboxd.sdk_options()) as sandbox:
            sandbox.files.write("who.txt", str(index))
            assert sandbox.commands.run("cat who.txt").stdout == str(index)
            return sandbox.sandbox_id

    with ThreadPoolExecutor(5) as workers:
        ids = list(workers.map(create_and_use, range(5)))
    assert len(set(ids)) == 5
    assert_healthy(sandboxd)


def test_list_filters_by_metadata_and_state(sandboxd: RunningSandboxd) -> None:
    tag = secrets.token_hex(4)
    opts = sandboxd.sdk_options()
    first = Sandbox.create(metadata={"run": tag, "who": "alice"}, **opts)
    second = Sandbox.create(metadata={"run": tag, "who": "bob"}, **opts)
    try:
        mine = Sandbox.list(query=SandboxQuery(metadata={"run": tag}), **opts).next_items()
        assert {s.sandbox_id for s in mine} == {first.sandbox_id, second.sandbox_id}
        bobs = Sandbox.list(
            query=SandboxQuery(metadata={"run": tag, "who": "bob"}), **opts
        ).next_items()
        assert [s.sandbox_id for s in bobs] == [second.sandbox_id]
        paused = Sandbox.list(
            query=SandboxQuery(metadata={"run": tag}, state=[SandboxState.PAUSED]), **opts
        ).next_items()
        assert paused == []
    finally:
        first.kill()
        second.kill()


def test_list_pages_with_a_next_token(sandboxd: RunningSandboxd) -> None:
    tag = secrets.token_hex(4)
    opts = sandboxd.sdk_options()
    sandboxes = [Sandbox.create(metadata={"page": tag}, **opts) for _ in range(3)]
    try:
        paginator = Sandbox.list(query=SandboxQuery(metadata={"page": tag}), limit=2, **opts)
        first_page = paginator.next_items()
        assert len(first_page) == 2 and paginator.has_next
        second_page = paginator.next_items()
        assert len(second_page) == 1 and not paginator.has_next
        seen = {s.sandbox_id for s in first_page + second_page}
        assert seen == {s.sandbox_id for s in sandboxes}
    finally:
        for sandbox in sandboxes:
            sandbox.kill()


def test_a_wrong_api_key_gets_401(sandboxd: RunningSandboxd) -> None:
    with pytest.raises(AuthenticationException):
        Sandbox.create(**{**sandboxd.sdk_options(), "api_key": "not-the-key"})
    answer = httpx.get(f"{sandboxd.url}/v2/sandboxes", timeout=10)
    assert answer.status_code == 401
    assert answer.json()["code"] == 401
    assert_healthy(sandboxd)


def test_health_needs_no_key_and_tells_counts_only_with_one(sandboxd: RunningSandboxd) -> None:
    anonymous = httpx.get(f"{sandboxd.url}/health", timeout=10).json()
    assert anonymous["status"] == "ok" and "sandboxes" not in anonymous
    with Sandbox.create(**sandboxd.sdk_options()):
        keyed = httpx.get(
            f"{sandboxd.url}/health", headers={"X-API-KEY": sandboxd.api_key}, timeout=10
        ).json()
        assert keyed["sandboxes"] >= 1


def pool_ready(server: RunningSandboxd) -> int:
    answer = httpx.get(f"{server.url}/health", headers={"X-API-KEY": server.api_key}, timeout=10)
    return int(answer.json()["pool_ready"])


def test_the_pool_hands_out_a_sandbox_and_refills(sandboxd: RunningSandboxd) -> None:
    assert wait_until(lambda: pool_ready(sandboxd) == 2, 60)
    # the pool holds sandboxes of the default template (sandboxd.templates)
    sandbox = Sandbox.create("code-interpreter-v1", **sandboxd.sdk_options())
    try:
        assert pool_ready(sandboxd) < 2
        assert wait_until(lambda: pool_ready(sandboxd) == 2, 60)
    finally:
        sandbox.kill()


def test_unknown_sandboxes_are_404_for_every_call(sandboxd: RunningSandboxd) -> None:
    opts = sandboxd.sdk_options()
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("doesnotexist", **opts)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info("doesnotexist", **opts)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout("doesnotexist", 30, **opts)
    assert Sandbox.kill("doesnotexist", **opts) is False
    answer = httpx.delete(
        f"{sandboxd.url}/sandboxes/doesnotexist",
        headers={"X-API-KEY": sandboxd.api_key},
        timeout=10,
    )
    assert answer.status_code == 404
    assert answer.json() == {"code": 404, "message": "sandbox doesnotexist not found"}
    assert_healthy(sandboxd)


def test_a_killed_sandbox_is_gone_for_its_clients(sandboxd: RunningSandboxd) -> None:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    assert Sandbox.kill(sandbox.sandbox_id, **sandboxd.sdk_options()) is True
    assert not sandbox.is_running()
    assert sandbox.kill() is False


def test_a_timeout_beyond_the_maximum_is_refused(sandboxd: RunningSandboxd) -> None:
    answer = httpx.post(
        f"{sandboxd.url}/v2/sandboxes",
        json={"templateID": "base", "timeout": 10**9},
        headers={"X-API-KEY": sandboxd.api_key},
        timeout=10,
    )
    assert answer.status_code == 400
    assert "timeout" in answer.json()["message"]


async def test_the_async_sdk_creates_lists_and_kills(sandboxd: RunningSandboxd) -> None:
    tag = secrets.token_hex(4)
    opts = sandboxd.sdk_options()
    sandbox = await AsyncSandbox.create(metadata={"async": tag}, **opts)
    try:
        assert await sandbox.is_running()
        listed = await AsyncSandbox.list(
            query=SandboxQuery(metadata={"async": tag}), **opts
        ).next_items()
        assert [s.sandbox_id for s in listed] == [sandbox.sandbox_id]
        await sandbox.set_timeout(200)
        info = await sandbox.get_info()
        assert info.metadata == {"async": tag}
        connected = await AsyncSandbox.connect(sandbox.sandbox_id, **opts)
        assert (await connected.commands.run("echo async")).stdout == "async\n"
    finally:
        assert await sandbox.kill() is True
    assert not await sandbox.is_running()


# --- a second server with small limits (conftest.small_sandboxd) ----------------------


def test_the_cap_on_live_sandboxes_answers_429_until_one_is_killed(
    small_sandboxd: RunningSandboxd,
) -> None:
    opts = small_sandboxd.sdk_options()
    first = Sandbox.create(**opts)
    second = Sandbox.create(**opts)
    try:
        with pytest.raises(RateLimitException):
            Sandbox.create(**opts)
        first.kill()
        third = Sandbox.create(**opts)
        assert third.commands.run("echo fits").stdout == "fits\n"
        third.kill()
    finally:
        first.kill()
        second.kill()
    assert_healthy(small_sandboxd)
