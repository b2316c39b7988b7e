"""Paused sandboxes: the workspace on disk, nothing running, restored on resume.

Pausing a sandbox stops its kernels, archives its workspace (``/home/user``, which holds the
user's files and the packages pip and npm installed there) with ``tar`` run *inside* the
sandbox, writes the archive and a small record under ``<state dir>/paused/<id>/``, and destroys
the jail: a paused sandbox holds no process and no memory. Resuming starts a fresh jail with
the same id and tokens and unpacks the archive inside it, again with ``tar`` in the sandbox, so
a link planted in the workspace can never make the host read or write one of its own files.
Kernels start fresh: variables do not survive a pause (E2B keeps memory; sandboxd keeps the
file system only).

Records survive a sandboxd restart (the janitor sweeps ``jails/``, never ``paused/``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxd.jail import FsError, JailError

if TYPE_CHECKING:
    from sandboxd.jail import Jail

log = logging.getLogger(__name__)

WORKSPACE = "/home/user"
ARCHIVE_CHUNK = 1 << 20
# tar exits 1 when a file changed while it was read (something still writing): the archive
# is still whole for every other file.
_TAR_OK = (0, 1)
_STDERR_KEPT = 2000


class PauseError(Exception):
    """Archiving or restoring a workspace failed; the message says how."""


@dataclass
class PausedRecord:
    """What is kept of a paused sandbox besides its workspace (all JSON-safe)."""

    sandbox_id: str
    template_id: str
    metadata: dict[str, str]
    env_vars: dict[str, str]
    envd_access_token: str
    traffic_access_token: str
    started_at: datetime
    end_at: datetime  # when it was paused (its end as a running sandbox)
    auto_pause: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["end_at"] = self.end_at.isoformat()
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> PausedRecord:
        data = json.loads(text)
        data["started_at"] = datetime.fromisoformat(data["started_at"])
        data["end_at"] = datetime.fromisoformat(data["end_at"])
        return cls(**data)


class PauseStore:
    """``<state dir>/paused/<id>/{record.json,workspace.tar}``, root-only."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "paused"

    def prepare(self) -> None:
        self.root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)

    def archive(self, sandbox_id: str) -> Path:
        return self.root / sandbox_id / "workspace.tar"

    def load_all(self) -> dict[str, PausedRecord]:
        """Every complete record; a half-written pause (no record) is removed."""
        found: dict[str, PausedRecord] = {}
        if not self.root.is_dir():
            return found
        for directory in self.root.iterdir():
            try:
                record = PausedRecord.from_json((directory / "record.json").read_text())
            except (OSError, ValueError, TypeError, KeyError):
                log.warning("removing an incomplete paused sandbox %s", directory.name)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            found[record.sandbox_id] = record
        return found

    def save(self, record: PausedRecord) -> None:
        """Write the record last, atomically: its presence means the archive is whole."""
        path = self.root / record.sandbox_id / "record.json"
        partial = path.with_suffix(".partial")
        partial.write_text(record.to_json())
        partial.replace(path)

    def delete(self, sandbox_id: str) -> None:
        shutil.rmtree(self.root / sandbox_id, ignore_errors=True)


async def save_workspace(jail: Jail, archive: Path) -> int:
    """Archive the sandbox's workspace into `archive` (made 0600); returns its size.

    Raises PauseError when tar fails. Output is read with the jail's flow control, so host
    memory stays bounded whatever the workspace's size (the workspace cap bounds the file).
    """
    archive.parent.mkdir(mode=0o700, exist_ok=True)
    process = await jail.spawn(["tar", "-C", WORKSPACE, "-cf", "-", "."])
    stderr = b""
    size = 0
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        async for event in process.events():
            if event.kind == "stdout":
                view = memoryview(event.data)
                while view:
                    view = view[os.write(fd, view) :]
                size += len(event.data)
            elif event.kind == "stderr":
                stderr = (stderr + event.data)[-_STDERR_KEPT:]
            elif event.exit_code not in _TAR_OK:
                raise PauseError(
                    "archiving the workspace failed: "
                    + stderr.decode(errors="replace").strip()[-300:]
                )
    finally:
        os.close(fd)
    return size


async def restore_workspace(jail: Jail, archive: Path) -> None:
    """Unpack `archive` into the sandbox's workspace, inside the sandbox; raises PauseError."""
    process = await jail.spawn(["tar", "-C", WORKSPACE, "-xf", "-", "--no-same-owner"], stdin=True)
    try:
        with archive.open("rb") as source:
            while chunk := source.read(ARCHIVE_CHUNK):
                await process.write_stdin(chunk)
        await process.close_stdin()
    except (JailError, FsError):
        pass  # tar stopped reading: its exit below says why
    stderr = b""
    async for event in process.events():
        if event.kind == "stderr":
            stderr = (stderr + event.data)[-_STDERR_KEPT:]
        elif event.kind == "exit" and event.exit_code != 0:
            raise PauseError(
                "restoring the workspace failed: " + stderr.decode(errors="replace").strip()[-300:]
            )
