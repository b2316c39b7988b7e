"""sandboxd's /metrics and per-sandbox usage, through a real server and the real SDK.

Usage tolerance: a run that burns 1.0 s of its own process CPU time (measured inside with
time.process_time, so the wall clock and the machine's load do not matter) must record
between 0.95 s and 1.5 s in the sandbox's cgroup: the kernel's own work for the cell (the
message round trip, the output) is the only other CPU spent in the sandbox meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2b_code_interpreter import Sandbox
from prometheus_client.parser import text_string_to_metric_families

from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.timeout(180)

BURN_SECONDS = 1.0
CPU_TOLERANCE = (0.95, 1.5)
ALLOCATION_BYTES = 200 * 1024 * 1024


def scrape(server: RunningSandboxd) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (sample name, sorted labels)."""
    response = httpx.get(f"{server.url}/metrics", headers={"X-API-KEY": server.api_key}, timeout=30)
    response.raise_for_status()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def sandbox(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    box = Sandbox.create(timeout=120, **sandboxd.sdk_options())
    try:
        yield box
    finally:
        box.kill()


def usage(server: RunningSandboxd, sandbox_id: str, *, reset: bool = False) -> dict:
    url = f"{server.url}/sandboxes/{sandbox_id}/usage" + ("/reset" if reset else "")
    headers = {"X-API-KEY": server.api_key}
    response = (httpx.post if reset else httpx.get)(url, headers=headers, timeout=30)
    response.raise_for_status()
    return response.json()


def test_metrics_refuse_a_caller_without_the_api_key(sandboxd: RunningSandboxd) -> None:
    url = f"{sandboxd.url}/metrics"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"X-API-KEY": "wrong"}, timeout=30).status_code == 401
    wrong_bearer = {"Authorization": "Bearer wrong"}
    assert httpx.get(url, headers=wrong_bearer, timeout=30).status_code == 401


def test_metrics_accept_the_key_as_a_bearer_token_as_prometheus_sends_it(
    sandboxd: RunningSandboxd,
) -> None:
    response = httpx.get(
        f"{sandboxd.url}/metrics",
        headers={"Authorization": f"Bearer {sandboxd.api_key}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert "sandboxd_sandboxes_live" in response.text
    assert response.headers["Content-Type"].startswith("text/plain")


def test_a_created_and_killed_sandbox_moves_the_live_count_and_the_durations(
    sandboxd: RunningSandboxd,
) -> None:
    before = scrape(sandboxd)
    created = sum(
        value(before, "sandboxd_sandbox_create_seconds_count", origin=o) for o in ("pool", "cold")
    )
    box = Sandbox.create(timeout=120, **sandboxd.sdk_options())
    try:
        during = scrape(sandboxd)
        assert (
            value(during, "sandboxd_sandboxes_live") == value(before, "sandboxd_sandboxes_live") + 1
        )
        assert (
            sum(
                value(during, "sandboxd_sandbox_create_seconds_count", origin=o)
                for o in ("pool", "cold")
            )
            == created + 1
        )
        # The new sandbox's own CPU and memory series, read from its cgroup.
        assert value(during, "sandboxd_sandbox_memory_bytes", sandbox_id=box.sandbox_id) > 0
        assert ("sandboxd_sandbox_cpu_seconds_total", (("sandbox_id", box.sandbox_id),)) in during
    finally:
        box.kill()
    after = scrape(sandboxd)
    assert value(after, "sandboxd_sandboxes_live") == value(before, "sandboxd_sandboxes_live")
    assert (
        value(after, "sandboxd_sandbox_destroy_seconds_count")
        >= value(before, "sandboxd_sandbox_destroy_seconds_count") + 1
    )
    assert ("sandboxd_sandbox_memory_bytes", (("sandbox_id", box.sandbox_id),)) not in after


def test_a_kernel_start_is_timed_by_language(sandboxd: RunningSandboxd, sandbox: Sandbox) -> None:
    # bash: the pool refilling in the background starts Python kernels only.
    before = value(scrape(sandboxd), "sandboxd_kernel_start_seconds_count", language="bash")
    context = sandbox.create_code_context(language="bash")
    assert sandbox.run_code("echo 1", context=context).logs.stdout == ["1\n"]
    after = value(scrape(sandboxd), "sandboxd_kernel_start_seconds_count", language="bash")
    assert after == before + 1


def test_the_event_loop_lag_and_process_metrics_are_served(sandboxd: RunningSandboxd) -> None:
    samples = scrape(sandboxd)
    assert ("sandboxd_event_loop_lag_seconds", ()) in samples
    assert value(samples, "process_resident_memory_bytes") > 0


def test_a_refused_egress_request_is_counted(sandboxd: RunningSandboxd, sandbox: Sandbox) -> None:
    before = value(scrape(sandboxd), "sandboxd_egress_requests_total", decision="refused")
    result = sandbox.commands.run("curl -sS https://example.com 2>&1; true", timeout=60)
    assert "403" in result.stdout
    after = value(scrape(sandboxd), "sandboxd_egress_requests_total", decision="refused")
    assert after == before + 1


def test_a_one_second_cpu_burn_records_about_one_second(
    sandboxd: RunningSandboxd, sandbox: Sandbox
) -> None:
    sandbox.run_code("import time")  # the kernel is up and idle before the first reading
    start = usage(sandboxd, sandbox.sandbox_id, reset=True)
    execution = sandbox.run_code(
        "t0 = time.process_time()\n"
        f"while time.process_time() - t0 < {BURN_SECONDS}:\n"
        "    pass\n"
        "print('burnt')"
    )
    assert execution.logs.stdout == ["burnt\n"]
    end = usage(sandboxd, sandbox.sandbox_id)
    spent = end["cpuSeconds"] - start["cpuSeconds"]
    assert CPU_TOLERANCE[0] <= spent <= CPU_TOLERANCE[1], spent


def test_a_200_mb_allocation_records_a_peak_of_at_least_200_mb(
    sandboxd: RunningSandboxd, sandbox: Sandbox
) -> None:
    start = usage(sandboxd, sandbox.sandbox_id, reset=True)
    assert start["peakSince"] == "reset"
    assert start["memoryPeakBytes"] < ALLOCATION_BYTES
    # bytes * n writes every page (a bytearray(n) could stay untouched zero pages).
    execution = sandbox.run_code(f"block = b'x' * {ALLOCATION_BYTES}\ndel block\nprint('ok')")
    assert execution.logs.stdout == ["ok\n"]
    end = usage(sandboxd, sandbox.sandbox_id)
    assert end["memoryPeakBytes"] >= ALLOCATION_BYTES
    # Freed again: the current usage is back below the peak.
    assert end["memoryBytes"] < end["memoryPeakBytes"]


def test_the_usage_of_an_unknown_sandbox_is_a_404(sandboxd: RunningSandboxd) -> None:
    response = httpx.get(
        f"{sandboxd.url}/sandboxes/{'0' * 20}/usage",
        headers={"X-API-KEY": sandboxd.api_key},
        timeout=30,
    )
    assert response.status_code == 404
    assert response.json()["code"] == 404


def test_the_usage_route_needs_the_api_key(sandboxd: RunningSandboxd, sandbox: Sandbox) -> None:
    url = f"{sandboxd.url}/sandboxes/{sandbox.sandbox_id}/usage"
    assert httpx.get(url, timeout=30).status_code == 401
    bearer = {"Authorization": f"Bearer {sandboxd.api_key}"}
    assert httpx.get(url, headers=bearer, timeout=30).status_code == 401


def test_an_oom_kill_is_counted_and_stays_counted_after_its_sandbox_is_gone(
    sandboxd: RunningSandboxd,
) -> None:
    before = value(scrape(sandboxd), "sandboxd_oom_kills_total")
    box = Sandbox.create(timeout=120, **sandboxd.sdk_options())
    try:
        # A command (not the kernel) past the sandbox's memory limit (1024 MiB by default):
        # the kernel's OOM killer ends it, the sandbox lives on.
        result = box.commands.run(
            "python3 -c \"block = b'x' * (1600 << 20)\"; echo exit=$?", timeout=120
        )
        assert "exit=137" in result.stdout
        assert value(scrape(sandboxd), "sandboxd_oom_kills_total") == before + 1
    finally:
        box.kill()
    assert value(scrape(sandboxd), "sandboxd_oom_kills_total") == before + 1


def run_usage(server: RunningSandboxd, sandbox_id: str, run_id: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/sandboxes/{sandbox_id}/runs/{run_id}/usage",
        headers={"X-API-KEY": server.api_key},
        timeout=30,
    )


BURN_CODE = (
    "import os, time\n"
    "t0 = time.process_time()\n"
    f"while time.process_time() - t0 < {BURN_SECONDS}:\n"
    "    pass\n"
    "print(os.environ.get('SANDBOXD_RUN_ID', 'unset'))"
)


def test_a_named_run_is_metered_alone_and_its_name_never_reaches_the_code(
    sandboxd: RunningSandboxd, sandbox: Sandbox
) -> None:
    burn = sandbox.run_code(BURN_CODE, envs={"SANDBOXD_RUN_ID": "run-burn"})
    quick = sandbox.run_code("print(1)", envs={"SANDBOXD_RUN_ID": "run-quick"})

    assert burn.logs.stdout == ["unset\n"]  # taken out, never set in the kernel
    assert quick.logs.stdout == ["1\n"]
    burnt = run_usage(sandboxd, sandbox.sandbox_id, "run-burn").json()
    assert burnt["finished"] is True
    assert CPU_TOLERANCE[0] <= burnt["cpuSeconds"] <= CPU_TOLERANCE[1], burnt
    small = run_usage(sandboxd, sandbox.sandbox_id, "run-quick").json()
    assert small["cpuSeconds"] < 0.3, small  # its own run only, not the burn before it
    assert small["memoryPeakBytes"] > 0


def test_an_unknown_run_is_a_404_and_a_malformed_run_name_a_400(
    sandboxd: RunningSandboxd, sandbox: Sandbox
) -> None:
    sandbox.run_code("1", envs={"SANDBOXD_RUN_ID": "known"})
    response = run_usage(sandboxd, sandbox.sandbox_id, "never-ran")
    assert response.status_code == 404 and response.json()["code"] == 404
    assert run_usage(sandboxd, "0" * 20, "known").status_code == 404

    refused = httpx.post(
        f"{sandboxd.url}/execute",
        headers={
            "E2b-Sandbox-Id": sandbox.sandbox_id,
            "E2b-Sandbox-Port": "49999",
            "X-Access-Token": sandbox._envd_access_token or "",
        },
        json={"code": "1", "env_vars": {"SANDBOXD_RUN_ID": "../x" * 30}},
        timeout=30,
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_argument"


def test_only_the_last_runs_readings_are_kept(sandboxd: RunningSandboxd, sandbox: Sandbox) -> None:
    from sandboxd.prometheus import RUN_READINGS_KEPT

    for n in range(RUN_READINGS_KEPT + 1):
        sandbox.run_code("1", envs={"SANDBOXD_RUN_ID": f"r{n}"})
    assert run_usage(sandboxd, sandbox.sandbox_id, "r0").status_code == 404
    assert run_usage(sandboxd, sandbox.sandbox_id, f"r{RUN_READINGS_KEPT}").status_code == 200
