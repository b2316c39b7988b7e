"""Real agent runtimes driving an AtlasChat agent's tools: LangGraph and the OpenAI Agents SDK,
each through the agent's MCP endpoint and through the client's tools.

Everything is real but the model: daphne serving the project in front of the session's
sandboxd (live.py), the runtimes and their MCP adapters (langchain-mcp-adapters,
`MCPServerStreamableHttp`), the project's client, and the examples' own code, which the
scenarios in agent_runtime_driver.py run in the runtimes' environment
(var/agent-runtimes-env, built by scripts/setup-agent-runtimes.sh). The model is
langchain-core's fake chat model for LangGraph, and for the Agents SDK a stub
OpenAI-compatible server on loopback (openai_stub.py) reached through the SDK's real OpenAI
client.

Each scenario: the model asks for `execute_code`, and its next turn holds the real output
(42); the runtime was offered exactly the agent's allowed tools; the tool it was not offered,
called anyway through the same channel, is refused by the server (`tool_not_allowed`) and
audited as a SecurityEvent naming the agent; and the run is an Execution of the agent with
source "agent", listed as such in the admin audit view.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.urls import reverse

from execution.agents.tools import TOOLS, tool_definition
from execution.models import Agent, Execution, SecurityEvent, Source
from execution.tests.live import (
    PROJECT_DIR,
    LiveUsers,
    bearer_headers,
    create_user,
    live_users_stack,
    session_cookie_header,
)
from execution.tests.openai_stub import StubModel, running_stub_model

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(300)]

RUNTIME_PYTHON = PROJECT_DIR / "var" / "agent-runtimes-env" / "bin" / "python"
DRIVER = Path(__file__).with_name("agent_runtime_driver.py")
ALLOWED = ["execute_code", "read_file", "list_files"]
FORBIDDEN = "install_packages"
PASSWORD = "a-long-test-password-for-the-examples"


@dataclass
class Live(LiveUsers):
    staff: AbstractBaseUser | None = None


@pytest.fixture(scope="module")
def live(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """daphne + a shared database + alice, charlie and a staff member."""
    if not RUNTIME_PYTHON.exists():
        pytest.fail(f"{RUNTIME_PYTHON} is missing: run `bash scripts/setup-agent-runtimes.sh`")
    with (
        django_db_blocker.unblock(),
        live_users_stack(tmp_path_factory.mktemp("runtimes-live"), sandboxd_server, Live) as live,
    ):
        live.alice.set_password(PASSWORD)
        live.alice.save(using=live.alias)
        live.staff = create_user(live.alias, "auditor")
        live.staff.is_staff = True
        live.staff.save(using=live.alias)
        yield live


def make_agent(live: Live, name: str) -> Agent:
    return Agent.objects.using(live.alias).create(
        owner=live.alice, name=name, allowed_tools=ALLOWED
    )


def runtime_env(live: Live, **extra: str) -> dict[str, str]:
    """The environment of a runtime process: ours only, the model on loopback."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "NO_PROXY": "127.0.0.1,localhost",
        "ATLASCHAT_URL": live.server.http_url,
        **extra,
    }


def run_in_runtime_env(live: Live, argv: list[str], env: dict[str, str]) -> str:
    """Run a script with the runtimes' Python; its stdout (the test fails on a non-zero
    exit, with the script's stderr and the server's log)."""
    done = subprocess.run(
        [str(RUNTIME_PYTHON), *argv],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, (
        f"{argv[0]} failed ({done.returncode}):\n{done.stderr[-6000:]}\n"
        f"--- daphne ---\n{live.server.log_tail()}"
    )
    return done.stdout


def run_scenario(
    live: Live, *, runtime: str, via: str, agent: Agent, model: StubModel | None = None
) -> dict[str, Any]:
    """Run agent_runtime_driver.py in the runtimes' environment; its JSON outcome."""
    scenario = {
        "runtime": runtime,
        "via": via,
        "forbidden": {
            "name": FORBIDDEN,
            "definition": tool_definition(TOOLS[FORBIDDEN], "openai"),
            "arguments": {"packages": ["six"], "language": "python"},
        },
    }
    env = runtime_env(
        live,
        ATLASCHAT_TOKEN=bearer_headers(live.alice)["Authorization"].removeprefix("Bearer "),
        ATLASCHAT_AGENT_ID=str(agent.id),
    )
    if model is not None:
        env |= {"OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "stub-key"}
    stdout = run_in_runtime_env(live, [str(DRIVER), json.dumps(scenario)], env)
    return json.loads(stdout.strip().splitlines()[-1])


def assert_refused_and_audited(live: Live, agent: Agent, forced: dict[str, Any]) -> None:
    """The forbidden call came back as the server's refusal and is one audit entry."""
    assert forced["text"].startswith("tool_not_allowed:"), forced
    assert forced.get("is_error", True) is True
    refused = SecurityEvent.objects.using(live.alias).filter(agent=agent, code="tool_not_allowed")
    assert refused.count() == 1
    event = refused.get()
    assert (event.source, event.user_id, event.kind) == (
        Source.AGENT,
        live.alice.pk,
        SecurityEvent.Kind.AUTHORIZATION,
    )


def assert_run_audited(live: Live, agent: Agent) -> Execution:
    """The model's one execute_code call is one Execution of the agent, source agent, shown
    as such in the admin audit view."""
    runs = Execution.objects.using(live.alias).filter(agent=agent)
    assert runs.count() == 1
    run = runs.get()
    assert (run.source, run.user_id, run.status, run.stdout) == (
        Source.AGENT,
        live.alice.pk,
        Execution.Status.SUCCEEDED,
        "42\n",
    )
    assert live.staff is not None
    changelist = reverse("admin:execution_execution_changelist")
    with httpx.Client(base_url=live.server.http_url, timeout=30) as http:
        listed = http.get(
            changelist,
            params={"agent__id__exact": str(agent.id), "source__exact": Source.AGENT},
            headers=session_cookie_header(live.alias, live.staff),
        )
        detail = http.get(
            reverse("admin:execution_execution_change", args=[run.pk]),
            headers=session_cookie_header(live.alias, live.staff),
        )
    assert listed.status_code == 200
    assert reverse("admin:execution_execution_change", args=[run.pk]) in listed.text
    assert agent.name in listed.text
    assert detail.status_code == 200
    assert agent.name in detail.text and "Agent" in detail.text
    return run


# --- LangGraph ------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["mcp", "client"])
def test_a_langgraph_agent_gets_the_real_output_back_and_sees_only_the_allowed_tools(
    live: Live, via: str
) -> None:
    agent = make_agent(live, f"langgraph-{via}")
    outcome = run_scenario(live, runtime="langgraph", via=via, agent=agent)

    assert outcome["tools_seen"] == ALLOWED
    first, second, third = outcome["turns"]
    assert first["tools"] == ALLOWED  # what the model was bound with
    tool_reply = second["messages"][-1]
    assert tool_reply["type"] == "tool"
    assert tool_reply["status"] == "success"
    assert "42" in tool_reply["content"]
    # The model asked for a tool it was not given: the runtime itself refused it, and nothing
    # reached the server (the only refusal audited below is the forced call).
    hallucinated = third["messages"][-1]
    assert hallucinated["status"] == "error"
    assert FORBIDDEN in hallucinated["content"]
    assert outcome["final"] == "The answer is 42."

    assert_refused_and_audited(live, agent, outcome["forced"])
    assert_run_audited(live, agent)


def test_blocking_langchain_tools_run_code_as_the_agent_and_refuse_the_others(
    live: Live,
) -> None:
    agent = make_agent(live, "langchain-blocking")
    outcome = run_scenario(live, runtime="langchain-blocking", via="client", agent=agent)
    assert outcome["tools_seen"] == ALLOWED
    assert "42" in outcome["output"]
    assert_refused_and_audited(live, agent, outcome["forced"])
    assert_run_audited(live, agent)


# --- OpenAI Agents SDK ----------------------------------------------------------------------


@pytest.mark.parametrize("via", ["mcp", "client"])
def test_an_openai_agents_sdk_agent_gets_the_real_output_back_and_sees_only_the_allowed_tools(
    live: Live, via: str
) -> None:
    agent = make_agent(live, f"openai-agents-{via}")
    with running_stub_model() as model:
        outcome = run_scenario(live, runtime="openai-agents", via=via, agent=agent, model=model)

    assert len(model.requests) == 2
    assert model.tool_names_offered(0) == ALLOWED  # what the model was offered
    assert outcome["tools_seen"] == ALLOWED
    assert "42" in str(model.tool_messages(1)[-1]["content"])
    assert "42" in outcome["final"]
    assert any("42" in output for output in outcome["tool_outputs"])

    assert_refused_and_audited(live, agent, outcome["forced"])
    assert_run_audited(live, agent)


# --- the examples, as the README runs them --------------------------------------------------


@pytest.mark.parametrize("via", ["mcp", "client"])
@pytest.mark.parametrize("example", ["langgraph_agent.py", "openai_agents_agent.py"])
def test_the_example_logs_in_defines_its_agent_and_runs_code_for_an_openai_compatible_model(
    live: Live, example: str, via: str
) -> None:
    name = f"example-{example.removesuffix('.py')}-{via}"
    with running_stub_model() as model:
        stdout = run_in_runtime_env(
            live,
            [str(PROJECT_DIR / "examples" / example), "--via", via, "Compute 6 * 7."],
            runtime_env(
                live,
                ATLASCHAT_USERNAME="alice",
                ATLASCHAT_PASSWORD=PASSWORD,
                ATLASCHAT_AGENT=name,
                OPENAI_BASE_URL=model.base_url,
                OPENAI_API_KEY="stub-key",
            ),
        )
    agent = Agent.objects.using(live.alias).get(owner=live.alice, name=name)
    default_tools = ["execute_code", "write_file", "read_file", "list_files"]
    assert agent.allowed_tools == default_tools
    assert model.tool_names_offered(0) == default_tools
    assert "42" in stdout.strip().splitlines()[-1]  # the final answer quotes the real output
    assert_run_audited(live, agent)
