"""A kernel's private directory in the sandbox's runtime dir, handled without trusting it.

``jail.runtime_dir`` is writable from inside the sandbox (visible there as ``/run/sandbox``), so
code in the sandbox can plant symlinks or files there to redirect the host (which runs as
root) to a host file or socket. The rules kept here:

* the directory is created by the host under a fresh random name and then only ever reached
  through an ``O_NOFOLLOW`` directory fd whose owner was checked, never by path again;
* files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` relative to that fd;
* once the kernel has bound its sockets the directory is handed back to root (0755), so the
  sandbox can no longer rename or replace entries, and each socket is then checked with lstat
  (a socket, owned by the sandbox uid) before the host connects to it through
  ``/proc/self/fd/<fd>/<name>`` (the pinned directory, whatever happens to its path).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


class RuntimeDirError(Exception):
    """The runtime directory or a socket in it is not what the host created or expects."""


class KernelDir:
    """One kernel's directory inside the sandbox runtime dir, pinned by an fd."""

    def __init__(self, runtime_dir: Path, sandbox_runtime_dir: str, prefix: str) -> None:
        """Create ``<runtime_dir>/<prefix>-<random>`` (mode 0700, owned by this process).

        Raises RuntimeDirError if it cannot be created (the sandbox filled its runtime dir)
        or if what was created is not a directory we own (a race with the sandbox). The
        message reaches the client, so it names the directory as the sandbox sees it, never
        its host path (under the state dir).
        """
        self.name = f"{prefix}-{secrets.token_hex(8)}"
        self.sandbox_path = f"{sandbox_runtime_dir.rstrip('/')}/{self.name}"
        host_path = runtime_dir / self.name
        try:
            os.mkdir(host_path, 0o700)
        except OSError as exc:
            raise RuntimeDirError(f"cannot create {self.sandbox_path}: {exc.strerror}") from exc
        try:
            self.fd = os.open(host_path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise RuntimeDirError(
                f"kernel dir {self.sandbox_path} was replaced: {exc.strerror}"
            ) from exc
        st = os.fstat(self.fd)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            os.close(self.fd)
            raise RuntimeDirError(f"kernel dir {self.sandbox_path} is not ours")
        self.host_path = host_path

    def write_file(
        self, name: str, data: bytes, *, owner_uid: int | None, mode: int = 0o600
    ) -> None:
        """Create `name` (must not exist) with `data` and `mode`, then give it to `owner_uid`."""
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode,
            dir_fd=self.fd,
        )
        try:
            os.write(fd, data)
            if owner_uid is not None and os.geteuid() == 0:
                os.fchown(fd, owner_uid, -1)
        finally:
            os.close(fd)

    def unlink(self, name: str) -> None:
        """Remove entry `name` if it is there (never following a symlink); a no-op once the
        directory is closed."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=self.fd)

    def hand_to(self, uid: int) -> None:
        """Let `uid` (the sandbox user) create entries, e.g. the kernel's sockets."""
        if os.geteuid() == 0:
            os.fchown(self.fd, uid, -1)

    def take_back(self) -> None:
        """Make the directory root's again (0755): the sandbox can no longer alter entries.

        It stays traversable throughout: the kernel may still be reading its connection
        file (ipykernel checks it after binding its sockets), and a directory that is
        root's but still 0700, for an instant, failed the kernel's start under load. So
        0755 comes first; the mode is set again once it is root's, undoing any change the
        sandbox made while the directory was still its own.
        """
        os.fchmod(self.fd, 0o755)
        if os.geteuid() == 0:
            os.fchown(self.fd, 0, 0)
            os.fchmod(self.fd, 0o755)

    def has(self, name: str) -> bool:
        """Whether an entry called `name` exists (not following a symlink)."""
        try:
            os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def checked_socket_path(self, name: str, owner_uid: int) -> str:
        """A path the host can connect to for socket `name`, after checking it.

        Raises RuntimeDirError unless `name` is a socket owned by `owner_uid` (a symlink, a
        regular file or another owner's socket is refused).
        """
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise RuntimeDirError(f"socket {name} is missing") from exc
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeDirError(f"{name} is not a socket")
        if os.geteuid() == 0 and st.st_uid != owner_uid:
            raise RuntimeDirError(f"socket {name} belongs to uid {st.st_uid}, not {owner_uid}")
        return f"/proc/self/fd/{self.fd}/{name}"

    def close(self) -> None:
        """Release the fd and remove the directory's entries and itself (best effort)."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            for name in os.listdir(self.fd):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self.fd)
        os.close(self.fd)
        self.fd = -1
        # rmdir on the path: if the sandbox swapped the name, this removes at most an empty
        # directory of the sandbox's own (rmdir never follows a symlink).
        with contextlib.suppress(OSError):
            os.rmdir(self.host_path)
