"""Test helpers for the jail layer: a real JailManager on a traversable state dir."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from sandboxd.jail import Jail, JailManager

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_ENV = PROJECT_ROOT / "var" / "sandbox-env"


def traversable_tmpdir(prefix: str) -> Path:
    """A fresh directory under /tmp that sandbox uids can traverse (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@asynccontextmanager
async def jail_manager(*, egress: bool = False) -> AsyncIterator[JailManager]:
    """A started JailManager; on exit every jail is destroyed and the state dir removed."""
    root = traversable_tmpdir("sj-test-")
    manager = JailManager(state_dir=root / "state", sandbox_env=SANDBOX_ENV, egress=egress)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.close()
        shutil.rmtree(root, ignore_errors=True)


async def run(jail: Jail, argv: Sequence[str], **kwargs: object) -> tuple[int | None, str, str]:
    """Run argv in the jail to completion: (exit code or -signal, stdout, stderr)."""
    process = await jail.spawn(argv, **kwargs)  # type: ignore[arg-type]
    out, err = bytearray(), bytearray()
    async for event in process.events():
        if event.kind == "stdout":
            out += event.data
        elif event.kind == "stderr":
            err += event.data
        else:
            code = event.exit_code if event.signal is None else -event.signal
            return code, out.decode(errors="replace"), err.decode(errors="replace")
    raise AssertionError("no exit event")


async def sh(jail: Jail, script: str) -> tuple[int | None, str, str]:
    """Run a bash script in the jail."""
    return await run(jail, ["bash", "-c", script])
