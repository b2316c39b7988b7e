"""Shared fixtures for sandboxd's tests: one real server for the whole session.

``sandboxd`` is a ``sandboxd.testing.RunningSandboxd``: the real ``python -m sandboxd serve``
on a free loopback port, with its state dir under /tmp (pytest's own tmp dir is 0700 and the
sandbox uids could not traverse it). Pass ``**sandboxd.sdk_options()`` to the SDK.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.testing import RunningSandboxd, running_sandboxd


def make_state_dir() -> Path:
    """A fresh state dir the sandbox uids can traverse (0755 under /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="sandboxd-test-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def sandboxd() -> Iterator[RunningSandboxd]:
    """The session's sandboxd (stopped, and checked to leave nothing behind, at the end)."""
    state_dir = make_state_dir()
    try:
        with running_sandboxd(
            state_dir=state_dir, api_key="test-" + secrets.token_hex(16)
        ) as server:
            yield server
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def small_sandboxd() -> Iterator[RunningSandboxd]:
    """A second server with small limits: at most 2 live sandboxes, no pool, and files of at
    most 1 MiB through /files."""
    state_dir = make_state_dir()
    try:
        with running_sandboxd(
            state_dir=state_dir,
            api_key="small-" + secrets.token_hex(8),
            env={
                "SANDBOXD_MAX_SANDBOXES": "2",
                "SANDBOXD_POOL_SIZE": "0",
                "SANDBOXD_MAX_FILE_MB": "1",
            },
        ) as server:
            yield server
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
