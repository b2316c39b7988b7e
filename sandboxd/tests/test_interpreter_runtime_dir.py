"""KernelDir: the host never follows what the sandbox plants in its runtime dir."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.interpreter.runtime_dir import KernelDir, RuntimeDirError

SANDBOX_UID = 54321  # any uid that is not the server's


@pytest.fixture
def kdir(tmp_path: Path) -> Iterator[KernelDir]:
    directory = KernelDir(tmp_path, "/run/sandbox", "py")
    try:
        yield directory
    finally:
        directory.close()


def _bind_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    return sock


def test_it_creates_a_fresh_private_directory_with_a_sandbox_path(
    tmp_path: Path, kdir: KernelDir
) -> None:
    st = os.lstat(kdir.host_path)

    assert kdir.host_path.parent == tmp_path
    assert kdir.sandbox_path == f"/run/sandbox/{kdir.name}"
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700


def test_it_refuses_to_write_through_a_planted_symlink(tmp_path: Path, kdir: KernelDir) -> None:
    target = tmp_path / "host-file"
    target.write_text("host secret")
    os.symlink(target, kdir.host_path / "kernel.json")

    with pytest.raises(OSError):
        kdir.write_file("kernel.json", b"{}", owner_uid=None)

    assert target.read_text() == "host secret"


def test_a_symlink_in_place_of_a_socket_is_refused(tmp_path: Path, kdir: KernelDir) -> None:
    host_socket = _bind_socket(tmp_path / "host.sock")
    os.symlink(tmp_path / "host.sock", kdir.host_path / "k-1")
    try:
        with pytest.raises(RuntimeDirError, match="not a socket"):
            kdir.checked_socket_path("k-1", os.geteuid())
    finally:
        host_socket.close()


def test_a_regular_file_in_place_of_a_socket_is_refused(kdir: KernelDir) -> None:
    (kdir.host_path / "k-1").write_text("")

    with pytest.raises(RuntimeDirError, match="not a socket"):
        kdir.checked_socket_path("k-1", os.geteuid())


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a socket's owner needs root")
def test_a_socket_of_another_owner_is_refused(kdir: KernelDir) -> None:
    sock = _bind_socket(kdir.host_path / "k-1")
    try:
        with pytest.raises(RuntimeDirError, match="belongs to uid"):
            kdir.checked_socket_path("k-1", SANDBOX_UID)
    finally:
        sock.close()


def test_a_checked_socket_is_reached_through_the_pinned_directory(kdir: KernelDir) -> None:
    sock = _bind_socket(kdir.host_path / "k-1")
    renamed = kdir.host_path.with_name(kdir.name + "-moved")
    try:
        path = kdir.checked_socket_path("k-1", os.geteuid())
        # Whatever later happens to the directory's name, the path still leads to it.
        os.rename(kdir.host_path, renamed)
        os.symlink("/nonexistent", kdir.host_path)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        client.close()
    finally:
        sock.close()
        os.unlink(kdir.host_path)
        os.rename(renamed, kdir.host_path)

    assert path == f"/proc/self/fd/{kdir.fd}/k-1"


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory over needs root")
def test_taking_the_directory_back_makes_it_roots_again(kdir: KernelDir) -> None:
    kdir.hand_to(SANDBOX_UID)
    handed = os.lstat(kdir.host_path)
    kdir.take_back()
    taken = os.lstat(kdir.host_path)

    assert handed.st_uid == SANDBOX_UID
    assert (taken.st_uid, stat.S_IMODE(taken.st_mode)) == (0, 0o755)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a directory over needs root")
def test_the_directory_stays_traversable_while_it_is_taken_back() -> None:
    # The kernel (the sandbox uid) may look at its connection file while the host takes
    # the directory back; a moment of "root's but still 0700" failed kernel starts.
    parent = Path(tempfile.mkdtemp(prefix="kdir-race-"))
    parent.chmod(0o755)
    directory = KernelDir(parent, "/run/sandbox", "py")
    try:
        directory.write_file("kernel.json", b"{}", owner_uid=SANDBOX_UID)
        directory.hand_to(SANDBOX_UID)  # as before the kernel starts
        probe = subprocess.Popen(
            ["sh", "-c", 'i=0; d=0; while [ $i -lt 50000 ]; do [ -e "$1" ] || d=$((d+1)); '
             'i=$((i+1)); done; echo $d', "sh", str(directory.host_path / "kernel.json")],
            user=SANDBOX_UID, group=SANDBOX_UID, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        cycles = 0
        while probe.poll() is None:
            directory.hand_to(SANDBOX_UID)
            os.chmod(directory.host_path, 0o700)  # as the sandbox finds it before take_back
            directory.take_back()
            cycles += 1
        assert probe.stdout is not None
        missed = int(probe.stdout.read())
    finally:
        directory.close()
        parent.rmdir()
    assert cycles > 100
    assert missed == 0


def test_closing_removes_the_directory(tmp_path: Path) -> None:
    directory = KernelDir(tmp_path, "/run/sandbox", "py")
    directory.write_file("kernel.json", b"{}", owner_uid=None)

    directory.close()

    assert list(tmp_path.iterdir()) == []
