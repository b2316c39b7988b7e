"""The fast tier: the Django side's decisions through the sandbox contract's in-memory
implementation (execution/sandbox/memory.py). No root, no sandboxd, seconds.

`memory_sandboxes` switches SANDBOX_BACKEND to the in-memory backend for one test and hands
it over (set `script`, `lose` a sandbox, make the server `unavailable`); background runs the
test started are waited for before the next test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execution.caller import Caller
from execution.models import Thread
from execution.sandbox import get_backend, reset_backends
from execution.sandbox.memory import MemoryBackend
from execution.services.runs import wait_for_background_runs
from execution.services.sandbox_sessions import sessions


@pytest.fixture
def memory_sandboxes(settings: Any, tmp_path: Path) -> Iterator[MemoryBackend]:
    settings.SANDBOX_BACKEND = "execution.sandbox.memory.MemoryBackend"
    # Stored file contents go to the test's own directory (the tier runs as any user).
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(tmp_path)}},
    }
    reset_backends()
    sessions.forget_all()
    backend = get_backend()
    assert isinstance(backend, MemoryBackend)
    yield backend
    assert wait_for_background_runs(30), "a background run of the test never ended"
    sessions.forget_all()
    reset_backends()


@pytest.fixture
def thread(alice: Any) -> Thread:
    return Thread.objects.create(owner=alice, title="t")


@pytest.fixture
def caller(alice: Any, memory_sandboxes: MemoryBackend) -> Caller:
    """Alice calling the services directly (source api), with the in-memory sandboxes."""
    return Caller(user=alice)
