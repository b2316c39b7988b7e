"""input() in a Python cell: only for a run that asks for it (SANDBOXD_ALLOW_STDIN=1 in its
env_vars), which then gets an input-request result and waits for POST /contexts/{id}/input.
Driven through the real SDK and server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2b_code_interpreter import Sandbox
from e2b_code_interpreter.models import Result

from sandboxd.interpreter.events import INPUT_REQUEST_MIME
from sandboxd.interpreter.service import STDIN_ENV
from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd


@pytest.fixture(scope="module")
def sbx(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    try:
        yield sandbox
    finally:
        sandbox.kill()


def post_input(sbx: Sandbox, context_id: str, value: Any) -> httpx.Response:
    """POST .../input as a client reaches the interpreter (the SDK's own URL and headers)."""
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999"}
    if sbx._envd_access_token:
        headers["X-Access-Token"] = sbx._envd_access_token
    return httpx.post(
        f"{sbx._jupyter_url}/contexts/{context_id}/input",
        json={"value": value},
        headers=headers,
        timeout=10,
    )


def test_a_cell_asks_for_input_and_the_answer_reaches_the_code(sbx: Sandbox) -> None:
    context = sbx.create_code_context(language="python")
    asked = threading.Event()
    requests: list[dict[str, Any]] = []

    def on_result(result: Result) -> None:
        if result.extra and INPUT_REQUEST_MIME in result.extra:
            requests.append(result.extra[INPUT_REQUEST_MIME])
            asked.set()

    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(
            execution=sbx.run_code(
                "name = input('Your name: ')\nprint(f'hello {name}')",
                context=context,
                envs={STDIN_ENV: "1"},
                on_result=on_result,
                timeout=60,
            )
        )
    )
    runner.start()
    try:
        assert asked.wait(30), "no input request came"
        assert requests == [{"prompt": "Your name: ", "password": False}]
        assert post_input(sbx, context.id, "Ada").status_code == 204
    finally:
        runner.join(60)
    execution = outcome["execution"]
    assert execution.error is None
    # The prompt and the answer, as a terminal shows them, then what the code printed.
    assert "".join(execution.logs.stdout) == "Your name: Ada\nhello Ada\n"
    # The reserved variable never reached the code.
    assert sbx.run_code(f"import os; os.environ.get('{STDIN_ENV}')", context=context).text is None


def test_without_asking_input_fails_at_once_and_answers_are_refused(sbx: Sandbox) -> None:
    context = sbx.create_code_context(language="python")
    execution = sbx.run_code("input('x? ')", context=context, timeout=30)
    assert execution.error is not None
    assert execution.error.name == "StdinNotImplementedError"
    answer = post_input(sbx, context.id, "late")
    assert answer.status_code == 409
    assert answer.json()["error"] == "no_input_requested"
    assert post_input(sbx, context.id, 42).status_code == 400
