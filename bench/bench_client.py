"""What each way of reaching AtlasChat costs per call, against a bare HTTP request.

One `print(1)` on a warm thread, through: a bare httpx `POST /api/code/execute` (the
baseline: no client library at all), the project's `Client.execute` and
`AsyncClient.execute`, `Client.call_tool` (the agents' REST tool-call endpoint), the agent's
MCP endpoint through the official `mcp` client (one session kept open, as runtimes do), and
`Client.stream` (a websocket per run, events until `done`). The ways are interleaved call by
call (a rotating order), so the machine's load moves them alike; each row's ratio is its p50
over the baseline's.

Everything is real on loopback: sandboxd, one daphne (SQLite file, in-memory layer).
`main()` prints the table and writes `bench/results/client.json`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.bench_execution import BENCH_ENV_NAMES, BENCH_SERVER_ENV, _setup_django, summary_ms

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "client.json"
RUNS = 100
WARMUP = 5
BASELINE = "bare httpx POST /api/code/execute"


async def measure(stack: Any, user: Any, thread_id: str, agent_id: str) -> dict[str, list[float]]:
    import httpx
    from mcp import Client as MCPClient
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    from atlaschat_client import AsyncClient, Client
    from execution.tests.live import bearer_headers

    headers = bearer_headers(user)
    token = headers["Authorization"].removeprefix("Bearer ")
    url = stack.server.http_url
    body = {"code": "print(1)", "language": "python", "thread_id": thread_id}
    arguments = {"code": "print(1)", "language": "python", "thread_id": thread_id}

    def check(stdout: str, way: str) -> None:
        if "1" not in stdout:
            raise RuntimeError(f"{way}: unexpected output {stdout!r}")

    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as bare,
        AsyncClient(url, access_token=token) as aclient,
        create_mcp_http_client(headers=headers) as mcp_http,
        MCPClient(
            streamable_http_client(f"{url}/api/agents/{agent_id}/mcp/", http_client=mcp_http)
        ) as mcp,
    ):
        with Client(url, access_token=token) as client:

            async def bare_post() -> None:
                response = await bare.post("/api/code/execute", json=body)
                check(response.json()["stdout"], BASELINE)

            async def sync_execute() -> None:
                check(client.execute("print(1)", thread_id=thread_id).stdout, "Client.execute")

            async def async_execute() -> None:
                run = await aclient.execute("print(1)", thread_id=thread_id)
                check(run.stdout, "AsyncClient.execute")

            async def rest_tool_call() -> None:
                result = client.call_tool(agent_id, "execute_code", arguments)
                check(result.text, "Client.call_tool")

            async def mcp_tool_call() -> None:
                result = await mcp.call_tool("execute_code", arguments)
                check(result.content[0].text, "MCP tools/call")

            async def stream() -> None:
                events = list(client.stream("print(1)", thread_id=thread_id))
                check("".join(e.text for e in events if e.type == "stdout"), "Client.stream")

            ways: dict[str, Callable[[], Awaitable[None]]] = {
                BASELINE: bare_post,
                "Client.execute (sync)": sync_execute,
                "AsyncClient.execute": async_execute,
                "Client.call_tool (REST tool call)": rest_tool_call,
                "MCP tools/call (mcp SDK client)": mcp_tool_call,
                "Client.stream (websocket per run)": stream,
            }
            timings: dict[str, list[float]] = {name: [] for name in ways}
            names = list(ways)
            for n in range(WARMUP + RUNS):
                # Rotate the order so no way always runs right after another.
                order = names[n % len(names) :] + names[: n % len(names)]
                for name in order:
                    started = time.perf_counter()
                    await ways[name]()
                    if n >= WARMUP:
                        timings[name].append(time.perf_counter() - started)
    return timings


def run_all(directory: Path) -> dict[str, Any]:
    from execution.models import Agent, Thread
    from execution.tests.live import create_user, live_stack
    from sandboxd.testing import running_sandboxd

    with (
        running_sandboxd(state_dir=directory / "sandboxd", api_key=secrets.token_urlsafe(24)) as sd,
        live_stack(
            directory / "live",
            sandboxd_url=sd.url,
            sandboxd_api_key=sd.api_key,
            extra_env=BENCH_SERVER_ENV,
        ) as stack,
    ):
        alias = stack.database.alias
        user = create_user(alias, "bench")
        thread = Thread.objects.using(alias).create(owner=user, title="bench")
        agent = Agent.objects.using(alias).create(
            owner=user, name="bench", allowed_tools=["execute_code"]
        )
        timings = asyncio.run(measure(stack, user, str(thread.id), str(agent.id)))
    rows = {name: summary_ms(values) for name, values in timings.items()}
    base = rows[BASELINE]["p50_ms"]
    for row in rows.values():
        row["p50_ratio_to_bare_http"] = round(row["p50_ms"] / base, 2)
    return {"ways": rows}


def render(results: dict[str, Any]) -> str:
    lines = [
        "| way (print(1), warm thread) | p50 ms | p95 ms | p50 / bare HTTP |",
        "|---|---|---|---|",
    ]
    for name, row in results["ways"].items():
        lines.append(
            f"| {name} | {row['p50_ms']} | {row['p95_ms']} | {row['p50_ratio_to_bare_http']}x |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the client benchmark, print the table, write bench/results/client.json."""
    saved = {name: os.environ.get(name) for name in BENCH_ENV_NAMES}
    try:
        with tempfile.TemporaryDirectory(prefix="atlaschat-bench-client-", dir="/tmp") as tmp:
            directory = Path(tmp)
            directory.chmod(0o755)  # sandboxd opens its state as the sandbox uids
            (directory / "live").mkdir()
            _setup_django(directory / "live")
            load_before = os.getloadavg()[0]
            results = run_all(directory)
            results["machine"] = {
                "cpus": os.cpu_count(),
                "load_average_1min_before": round(load_before, 2),
                "load_average_1min_after": round(os.getloadavg()[0], 2),
            }
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    print(render(results))
    print(f"machine: {results['machine']}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
