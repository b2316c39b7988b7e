"""A new thread's first run is served by a kernel sandboxd started ahead (its warm pool), for
Python and for the first JavaScript run after it: no kernel start on the request path."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from execution.caller import Caller
from execution.models import Thread
from execution.services.tool_executor import ToolExecutor
from sandboxd.testing import RunningSandboxd, wait_until

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(180), pytest.mark.django_db]

# How long the kernel process answering has existed, measured inside it (CLOCK_BOOTTIME and
# the process's start in /proc are both counted from boot; JavaScript has its own uptime).
PYTHON_KERNEL_AGE = (
    "import os, time\n"
    "start = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])\n"
    "print(time.clock_gettime(time.CLOCK_BOOTTIME) - start / os.sysconf('SC_CLK_TCK'))"
)
JAVASCRIPT_KERNEL_AGE = "console.log(process.uptime())"


def pool_ready(server: RunningSandboxd) -> int:
    answer = httpx.get(f"{server.url}/health", headers={"X-API-KEY": server.api_key}, timeout=10)
    return int(answer.json()["pool_ready"])


def timed_run(
    caller: Caller, thread: Thread | None, code: str, language: str
) -> tuple[float, float]:
    """(age of the kernel that ran `code` in `thread` (None: a new one), seconds the request
    took)."""
    started = time.monotonic()
    execution = ToolExecutor().execute_code(
        code=code, language=language, caller=caller, thread=thread
    )
    elapsed = time.monotonic() - started
    assert execution.status == "succeeded", (execution.stderr, execution.error)
    return float(execution.stdout), elapsed


def test_a_new_threads_first_python_and_javascript_runs_find_their_kernels_started(
    alice: Any, sandboxd: RunningSandboxd
) -> None:
    # A pooled sandbox is what a new thread gets when the pool has one ready.
    assert wait_until(lambda: pool_ready(sandboxd) >= 1, 120)
    caller = Caller(user=alice)

    python_age, python_elapsed = timed_run(caller, None, PYTHON_KERNEL_AGE, "python")
    thread = Thread.objects.get(owner=alice)
    javascript_age, javascript_elapsed = timed_run(
        caller, thread, JAVASCRIPT_KERNEL_AGE, "javascript"
    )

    # Each kernel existed before the request that used it began.
    assert python_age > python_elapsed
    assert javascript_age > javascript_elapsed
