"""envd's files API through the real SDK (sync and async): /files read and write (text,
bytes, multipart with several files, octet-stream, gzip, signed URLs) and the filesystem
RPCs (exists, list with depth, make_dir, rename, remove, get_info, watching); access
tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from e2b import AsyncSandbox, FilesystemEvent, FilesystemEventType, FileType, Sandbox
from e2b.connection_config import ConnectionConfig
from e2b.exceptions import (
    AuthenticationException,
    FileNotFoundException,
    SandboxException,
)
from packaging.version import Version

from sandboxd import ENVD_VERSION
from sandboxd.testing import RunningSandboxd
from sandboxd.tests.test_control_plane import assert_healthy

pytestmark = pytest.mark.sandboxd


@pytest.fixture(scope="module")
def sandbox(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    """One sandbox for the module's file tests (each test uses its own directory)."""
    created = Sandbox.create(**sandboxd.sdk_options())
    yield created
    created.kill()


def test_it_writes_and_reads_text_and_bytes(sandbox: Sandbox) -> None:
    info = sandbox.files.write("/home/user/texts/hello.txt", "héllo\n")
    assert info.path == "/home/user/texts/hello.txt"
    assert info.type == FileType.FILE
    assert sandbox.files.read("/home/user/texts/hello.txt") == "héllo\n"
    payload = bytes(range(256)) * 64
    sandbox.files.write("texts/blob.bin", payload)
    assert sandbox.files.read("texts/blob.bin", format="bytes") == payload
    # What the files API wrote is what code in the sandbox sees.
    assert sandbox.commands.run("cat texts/hello.txt").stdout == "héllo\n"


def test_write_files_uploads_several_files_in_one_multipart_request(sandbox: Sandbox) -> None:
    written = sandbox.files.write_files(
        [
            {"path": "multi/a.txt", "data": "first"},
            {"path": "/home/user/multi/deeper/b.bin", "data": b"\x00second"},
            {"path": "multi/c.txt", "data": "third"},
            {"path": 'multi/héllo "wörld".txt', "data": "named"},
        ]
    )
    assert [w.path for w in written] == [
        "/home/user/multi/a.txt",
        "/home/user/multi/deeper/b.bin",
        "/home/user/multi/c.txt",
        '/home/user/multi/héllo "wörld".txt',
    ]
    assert sandbox.files.read('multi/héllo "wörld".txt') == "named"
    assert sandbox.files.read("multi/deeper/b.bin", format="bytes") == b"\x00second"
    assert sandbox.files.read("multi/c.txt") == "third"


def test_octet_stream_and_gzip_uploads_arrive_intact(sandbox: Sandbox) -> None:
    sandbox.files.write("octet/plain.txt", "raw body", use_octet_stream=True)
    sandbox.files.write("octet/zipped.txt", "gzipped body " * 100, gzip=True)
    assert sandbox.files.read("octet/plain.txt") == "raw body"
    assert sandbox.files.read("octet/zipped.txt", gzip=True) == "gzipped body " * 100
    stream = sandbox.files.read("octet/plain.txt", format="stream")
    assert b"".join(stream) == b"raw body"


def test_files_over_the_size_cap_are_refused_both_ways(small_sandboxd: RunningSandboxd) -> None:
    with Sandbox.create(**small_sandboxd.sdk_options()) as sandbox:
        with pytest.raises(SandboxException, match="413"):
            sandbox.files.write("big.bin", b"x" * (2 << 20))
        sandbox.commands.run("head -c 2000000 /dev/zero > big.bin")
        with pytest.raises(SandboxException, match="413"):
            sandbox.files.read("big.bin", format="bytes")
        sandbox.files.write("fits.bin", b"y" * 1000)
        assert sandbox.files.read("fits.bin") == "y" * 1000


def test_reading_a_missing_file_raises_file_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(FileNotFoundException):
        sandbox.files.read("no/such/file.txt")


def test_exists_make_dir_list_rename_remove_and_get_info(sandbox: Sandbox) -> None:
    assert sandbox.files.exists("tree") is False
    assert sandbox.files.make_dir("tree/inner") is True
    assert sandbox.files.make_dir("tree/inner") is False
    sandbox.files.write("tree/inner/leaf.txt", "leaf")
    sandbox.files.write("tree/top.txt", "top")

    shallow = sandbox.files.list("tree")
    assert sorted((e.name, e.type) for e in shallow) == [
        ("inner", FileType.DIR),
        ("top.txt", FileType.FILE),
    ]
    deep = sandbox.files.list("tree", depth=2)
    assert "/home/user/tree/inner/leaf.txt" in {e.path for e in deep}

    moved = sandbox.files.rename("tree/top.txt", "tree/inner/moved.txt")
    assert moved.path == "/home/user/tree/inner/moved.txt"
    assert sandbox.files.exists("tree/top.txt") is False

    info = sandbox.files.get_info("tree/inner/moved.txt")
    assert info.size == 3 and info.type == FileType.FILE
    assert info.permissions.startswith("-rw")

    sandbox.files.remove("tree")
    assert sandbox.files.exists("tree") is False
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info("tree/inner/moved.txt")


def test_a_symlink_is_reported_as_envd_does_with_its_targets_type_and_resolved_path(
    sandbox: Sandbox,
) -> None:
    sandbox.commands.run("mkdir -p links/dir && ln -sf ../links/dir/../../links/data links/to-data")
    sandbox.files.write("links/data", "x")
    sandbox.commands.run("ln -sfn dir links/to-dir && ln -sf nowhere links/dangling")
    info = sandbox.files.get_info("links/to-data")
    assert (info.type, info.symlink_target) == (FileType.FILE, "/home/user/links/data")
    listed = {e.name: (e.type, e.symlink_target) for e in sandbox.files.list("links", depth=3)}
    assert listed["to-dir"] == (FileType.DIR, "/home/user/links/dir")
    assert listed["dangling"] == (FileType.FILE, "/home/user/links/nowhere")
    assert listed["data"] == (FileType.FILE, None)
    # a linked directory is listed, never entered
    assert not any(
        e.path.startswith("/home/user/links/to-dir/") for e in sandbox.files.list("links", depth=3)
    )


def test_a_watcher_reports_creates_writes_and_removes(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("watched/sub")
    sandbox.files.write("watched/existing.txt", "v1")
    watcher = sandbox.files.watch_dir("watched", recursive=True)
    try:
        assert watcher.get_new_events() == []
        sandbox.files.write("watched/new.txt", "fresh")
        sandbox.files.write("watched/existing.txt", "version two")
        sandbox.files.write("watched/sub/deep.txt", "deep")
        events = {(e.name, e.type) for e in watcher.get_new_events()}
        assert events == {
            ("new.txt", FilesystemEventType.CREATE),
            ("existing.txt", FilesystemEventType.WRITE),
            ("sub/deep.txt", FilesystemEventType.CREATE),
            # the sub directory's mtime changed with its new entry
            ("sub", FilesystemEventType.WRITE),
        }
        sandbox.files.remove("watched/new.txt")
        assert [(e.name, e.type) for e in watcher.get_new_events()] == [
            ("new.txt", FilesystemEventType.REMOVE)
        ]
    finally:
        watcher.stop()
    with pytest.raises(SandboxException, match="already stopped"):
        watcher.get_new_events()


def test_watching_a_missing_directory_is_not_found(sandbox: Sandbox) -> None:
    with pytest.raises(FileNotFoundException):
        sandbox.files.watch_dir("no/such/dir")


async def test_the_async_watch_stream_delivers_events(sandboxd: RunningSandboxd) -> None:
    sandbox = await AsyncSandbox.create(**sandboxd.sdk_options())
    try:
        await sandbox.files.make_dir("streamed")
        seen: list[tuple[str, FilesystemEventType]] = []
        arrived = asyncio.Event()

        def on_event(event: FilesystemEvent) -> None:
            seen.append((event.name, event.type))
            arrived.set()

        handle = await sandbox.files.watch_dir("streamed", on_event=on_event)
        await sandbox.files.write("streamed/hello.txt", "hi")
        await asyncio.wait_for(arrived.wait(), 10)
        await handle.stop()
        assert seen == [("hello.txt", FilesystemEventType.CREATE)]
    finally:
        await sandbox.kill()


def test_signed_urls_download_and_upload_without_headers(sandbox: Sandbox) -> None:
    sandbox.files.write("signed/in.txt", "signed content")
    download = sandbox.download_url("signed/in.txt", use_signature_expiration=60)
    answer = httpx.get(download, headers={"E2b-Sandbox-Id": sandbox.sandbox_id}, timeout=10)
    assert answer.status_code == 200 and answer.content == b"signed content"

    upload = sandbox.upload_url("signed/out.txt")
    answer = httpx.post(
        upload,
        files={"file": ("signed/out.txt", b"uploaded")},
        headers={"E2b-Sandbox-Id": sandbox.sandbox_id},
        timeout=10,
    )
    assert answer.status_code == 200
    assert sandbox.files.read("signed/out.txt") == "uploaded"

    tampered = download.replace("signed%2Fin.txt", "signed%2Fout.txt")
    answer = httpx.get(tampered, headers={"E2b-Sandbox-Id": sandbox.sandbox_id}, timeout=10)
    assert answer.status_code == 401


def test_a_wrong_access_token_is_refused_on_every_sandbox_route(
    sandbox: Sandbox, sandboxd: RunningSandboxd
) -> None:
    wrong = {"E2b-Sandbox-Id": sandbox.sandbox_id, "X-Access-Token": "wrong-token"}
    files = httpx.get(
        f"{sandboxd.url}/files",
        params={"path": "/etc/hostname"},
        headers={**wrong, "E2b-Sandbox-Port": "49983"},
        timeout=10,
    )
    assert files.status_code == 401
    rpc = httpx.post(
        f"{sandboxd.url}/filesystem.Filesystem/Stat",
        json={"path": "/home/user"},
        headers={**wrong, "E2b-Sandbox-Port": "49983", "Connect-Protocol-Version": "1"},
        timeout=10,
    )
    assert rpc.status_code == 401
    interpreter = httpx.get(
        f"{sandboxd.url}/contexts",
        headers={**wrong, "E2b-Sandbox-Port": "49999", "E2B-Traffic-Access-Token": "nope"},
        timeout=10,
    )
    assert interpreter.status_code == 401
    missing = httpx.get(
        f"{sandboxd.url}/health", headers={"E2b-Sandbox-Id": sandbox.sandbox_id}, timeout=10
    )
    assert missing.status_code == 401
    # The SDK, holding a wrong token, gets its authentication error on files and commands.
    config = ConnectionConfig(
        extra_sandbox_headers={**wrong, "E2b-Sandbox-Port": "49983"}, **sandboxd.sdk_options()
    )
    impostor = Sandbox(
        sandbox_id=sandbox.sandbox_id,
        envd_version=Version(ENVD_VERSION),
        envd_access_token="wrong-token",
        sandbox_domain=None,
        connection_config=config,
    )
    with pytest.raises(AuthenticationException):
        impostor.files.read("signed/in.txt")
    with pytest.raises(AuthenticationException):
        impostor.commands.run("echo never")
    # And the sandbox still works with the right token.
    assert sandbox.files.read("/home/user/signed/in.txt") == "signed content"
    assert_healthy(sandboxd)


async def test_the_async_sdk_reads_writes_and_lists(sandboxd: RunningSandboxd) -> None:
    sandbox = await AsyncSandbox.create(**sandboxd.sdk_options())
    try:
        await sandbox.files.write_files(
            [{"path": "async/one.txt", "data": "1"}, {"path": "async/two.txt", "data": "2"}]
        )
        assert await sandbox.files.read("async/two.txt") == "2"
        names = sorted(e.name for e in await sandbox.files.list("async"))
        assert names == ["one.txt", "two.txt"]
        assert await sandbox.files.exists("async/one.txt")
        await sandbox.files.remove("async/one.txt")
        assert not await sandbox.files.exists("async/one.txt")
        with pytest.raises(FileNotFoundException):
            await sandbox.files.read("async/one.txt")
    finally:
        await sandbox.kill()
