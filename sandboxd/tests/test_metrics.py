"""``Sandbox.get_metrics()`` and the control plane's metrics routes, from the sandbox's cgroup,
through the real SDK (sync and async) against a real sandboxd."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from e2b import AsyncSandbox
from e2b_code_interpreter import Sandbox

from sandboxd.metrics import SAMPLE_SECONDS
from sandboxd.testing import RunningSandboxd, wait_until

pytestmark = pytest.mark.sandboxd


def test_metrics_move_when_a_cell_burns_cpu_and_holds_memory(sandboxd: RunningSandboxd) -> None:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    try:
        assert wait_until(lambda: len(sandbox.get_metrics()) > 0, 30)
        [first, *_] = sandbox.get_metrics()
        assert first.cpu_count >= 1
        assert first.mem_total == 1 << 30  # the sandbox's memory limit
        assert first.disk_total > 0
        assert 0 <= first.disk_used <= first.disk_total

        # hold 300 MiB and spin for longer than two samples
        sandbox.run_code(
            "import time\nheld = bytearray(300 << 20)\nfor i in range(0, len(held), 4096):\n"
            "    held[i] = 1\nend = time.monotonic() + "
            f"{SAMPLE_SECONDS * 2.5}\nwhile time.monotonic() < end:\n    pass",
            timeout=120,
        )
        sandbox.files.write("bulk.bin", b"\0" * (20 << 20))

        def moved() -> bool:
            latest = sandbox.get_metrics()
            return any(m.cpu_used_pct > 5 for m in latest) and latest[-1].mem_used > (
                first.mem_used + (200 << 20)
            )

        assert wait_until(moved, 60), sandbox.get_metrics()
        assert wait_until(lambda: sandbox.get_metrics()[-1].disk_used >= 20 << 20, 30)
    finally:
        sandbox.kill()


async def test_metrics_answer_a_time_window_and_the_batch_route(sandboxd: RunningSandboxd) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    sandbox = await AsyncSandbox.create(**sandboxd.sdk_options())
    try:
        found: list = []
        for _ in range(60):
            found = await sandbox.get_metrics(start=before, end=datetime.now(UTC))
            if found:
                break
            await asyncio.sleep(0.5)
        assert found and all(m.timestamp >= before - timedelta(seconds=1) for m in found)
        assert (
            await sandbox.get_metrics(
                start=before - timedelta(hours=1), end=before - timedelta(minutes=30)
            )
            == []
        )
        async with httpx.AsyncClient() as client:
            answer = await client.get(
                f"{sandboxd.url}/sandboxes/metrics",
                params={"sandbox_ids": f"{sandbox.sandbox_id},nosuchsandbox"},
                headers={"X-API-KEY": sandboxd.api_key},
            )
        assert answer.status_code == 200
        assert list(answer.json()["sandboxes"]) == [sandbox.sandbox_id]
        assert answer.json()["sandboxes"][sandbox.sandbox_id]["memTotal"] == 1 << 30
    finally:
        await sandbox.kill()
