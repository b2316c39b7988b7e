"""envd and control-plane behaviours E2B's own test suites rely on, through the real SDK (sync
and async) against a real sandboxd."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from e2b import AsyncSandbox, FileType, Sandbox, SandboxQuery, TimeoutException

from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd


@pytest.fixture(scope="module")
def sbx(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    try:
        yield sandbox
    finally:
        sandbox.kill()


def test_sandboxes_are_listed_newest_first_unless_asked(sandboxd: RunningSandboxd) -> None:
    tag = {"purpose": f"order-{time.monotonic_ns()}"}
    first = Sandbox.create(metadata=tag, **sandboxd.sdk_options())
    second = Sandbox.create(metadata=tag, **sandboxd.sdk_options())
    try:
        query = SandboxQuery(metadata=tag)
        listed = Sandbox.list(query=query, **sandboxd.sdk_options()).next_items()
        assert [s.sandbox_id for s in listed] == [second.sandbox_id, first.sandbox_id]
    finally:
        first.kill()
        second.kill()


def test_a_signed_download_url_works_as_a_plain_link_until_it_expires(sbx: Sandbox) -> None:
    sbx.files.write("shared.txt", "for a browser")
    with urllib.request.urlopen(sbx.download_url("shared.txt", "user")) as answer:  # noqa: S310
        assert answer.read() == b"for a browser"
    with urllib.request.urlopen(  # noqa: S310
        sbx.download_url("shared.txt", "user", use_signature_expiration=120)
    ) as answer:
        assert answer.read() == b"for a browser"

    expired = sbx.download_url("shared.txt", "user", use_signature_expiration=-120)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(expired)  # noqa: S310
    assert refused.value.code == 401
    assert json.loads(refused.value.read()) == {
        "code": 401,
        "message": "signature is already expired",
    }
    # a signature covers its own path only
    other = sbx.download_url("shared.txt", "user").replace("shared.txt", "other.txt")
    with pytest.raises(urllib.error.HTTPError) as forged:
        urllib.request.urlopen(other)  # noqa: S310
    assert forged.value.code == 401


async def test_the_async_sdks_command_timeout_ends_the_stream_at_its_deadline(
    sandboxd: RunningSandboxd,
) -> None:
    sandbox = await AsyncSandbox.create(**sandboxd.sdk_options())
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            await sandbox.commands.run("sleep 30", timeout=2)
        # the server ended it: well before the command would have (no timing asserted
        # beyond "not the command's own end")
        assert time.monotonic() - started < 30
        result = await sandbox.commands.run("echo still fine", timeout=20)
        assert result.stdout == "still fine\n"
    finally:
        await sandbox.kill()


def test_removing_a_missing_path_succeeds(sbx: Sandbox) -> None:
    sbx.files.remove("never-existed/at-all.txt")
    assert sbx.files.exists("never-existed") is False


def test_a_deep_listing_is_depth_first_with_each_directorys_children_after_it(
    sbx: Sandbox,
) -> None:
    for path in ("tree/b/b2", "tree/b/b1", "tree/a/a1"):
        sbx.files.make_dir(path)
    sbx.files.write("tree/file.txt", "x")
    names = [e.path.removeprefix("/home/user/tree/") for e in sbx.files.list("tree", depth=2)]
    assert names == ["a", "a/a1", "b", "b/b1", "b/b2", "file.txt"]


def test_an_absurd_depth_lists_the_tree_and_the_sandbox_stays_usable(sbx: Sandbox) -> None:
    sbx.commands.run("mkdir -p abyss/1/2/3/4/5/6/7/8/9")
    entries = sbx.files.list("abyss", depth=10**9)
    assert len(entries) == 9
    assert entries[-1].path == "/home/user/abyss/1/2/3/4/5/6/7/8/9"
    assert sbx.commands.run("echo alive").stdout == "alive\n"


def test_too_many_entries_is_a_stated_error_not_a_hang(sbx: Sandbox) -> None:
    sbx.commands.run("mkdir -p crowd && cd crowd && seq 1 20001 | xargs touch")
    with pytest.raises(Exception, match="entries to list"):
        sbx.files.list("crowd")
    sbx.commands.run("rm -rf crowd")


def test_a_file_name_that_is_not_utf8_does_not_break_listing_its_directory(
    sbx: Sandbox,
) -> None:
    sbx.commands.run("mkdir -p mixed && touch mixed/good.txt \"mixed/bad-$(printf '\\xff').txt\"")
    names = sorted(e.name for e in sbx.files.list("mixed"))
    assert names == ["bad-\ufffd.txt", "good.txt"]
    assert [e.type for e in sbx.files.list("mixed")] == [FileType.FILE, FileType.FILE]
    assert sbx.files.read("mixed/good.txt") == ""


def test_a_killed_command_is_gone_when_kill_returns(sbx: Sandbox) -> None:
    for _ in range(5):  # a race shows only now and then: look several times
        handle = sbx.commands.run("sleep 60", background=True)
        assert sbx.commands.kill(handle.pid) is True
        probe = sbx.commands.run(f"kill -0 {handle.pid} 2>&1 || echo gone")
        assert probe.stdout.strip().endswith("gone")
