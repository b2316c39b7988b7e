"""Contexts, concurrency, interrupts and dying kernels, through the real async SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping

import httpx
import pytest
from e2b import NotFoundException, TimeoutException
from e2b_code_interpreter import AsyncSandbox, OutputMessage

from sandboxd.interpreter.contexts import Emit, KernelContext
from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd


@pytest.fixture
async def sbx(sandboxd: RunningSandboxd) -> AsyncIterator[AsyncSandbox]:
    sandbox = await AsyncSandbox.create(**sandboxd.sdk_options())
    try:
        yield sandbox
    finally:
        await sandbox.kill()


def _interpreter_headers(sbx: AsyncSandbox) -> dict[str, str]:
    """The headers the SDK sends to the code interpreter, for requests it would refuse."""
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999"}
    if sbx._envd_access_token:
        headers["X-Access-Token"] = sbx._envd_access_token
    if sbx.traffic_access_token:
        headers["E2B-Traffic-Access-Token"] = sbx.traffic_access_token
    return headers


async def test_contexts_are_created_listed_restarted_and_removed(sbx: AsyncSandbox) -> None:
    ctx = await sbx.create_code_context(cwd="/tmp", language="python")
    assert (ctx.language, ctx.cwd) == ("python", "/tmp")

    cwd = await sbx.run_code("import os\nstate = 'kept'\nos.getcwd()", context=ctx)
    listed = {c.id: c for c in await sbx.list_code_contexts()}
    kept = await sbx.run_code("state", context=ctx)
    await sbx.restart_code_context(ctx)
    after_restart = await sbx.run_code("state", context=ctx)
    await sbx.remove_code_context(ctx)

    assert cwd.text == "/tmp"
    assert listed[ctx.id].cwd == "/tmp"
    assert kept.text == "kept"
    assert after_restart.error is not None and after_restart.error.name == "NameError"
    assert ctx.id not in {c.id for c in await sbx.list_code_contexts()}
    with pytest.raises(NotFoundException):
        await sbx.run_code("1", context=ctx)
    with pytest.raises(NotFoundException):
        await sbx.remove_code_context(ctx.id)


async def test_two_contexts_of_one_language_do_not_share_state(sbx: AsyncSandbox) -> None:
    first = await sbx.create_code_context()
    second = await sbx.create_code_context()

    await sbx.run_code("owner = 'first'", context=first)
    seen = await sbx.run_code("owner", context=second)

    assert seen.error is not None and seen.error.name == "NameError"


async def test_it_refuses_a_context_in_a_missing_directory(sbx: AsyncSandbox) -> None:
    with pytest.raises(Exception, match="400"):
        await sbx.create_code_context(cwd="/home/user/no/such/dir")


async def test_context_id_and_language_together_are_a_bad_request(sbx: AsyncSandbox) -> None:
    ctx = await sbx.create_code_context()
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{sbx._jupyter_url}/execute",
            json={"code": "1", "context_id": ctx.id, "language": "python"},
            headers=_interpreter_headers(sbx),
        )
        unknown = await client.post(
            f"{sbx._jupyter_url}/execute",
            json={"code": "1", "context_id": "no-such-context"},
            headers=_interpreter_headers(sbx),
        )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_argument"
    assert unknown.status_code == 404


async def test_a_second_run_on_a_context_waits_for_the_first(sbx: AsyncSandbox) -> None:
    ctx = await sbx.create_code_context()
    await sbx.run_code("log = []", context=ctx)
    started = asyncio.Event()

    async def on_stdout(message: OutputMessage) -> None:
        started.set()

    first = asyncio.create_task(
        sbx.run_code(
            "import time\nlog.append('a-start')\nprint('started', flush=True)\n"
            "time.sleep(1)\nlog.append('a-end')",
            context=ctx,
            on_stdout=on_stdout,
        )
    )
    await asyncio.wait_for(started.wait(), 30)
    second = await sbx.run_code("log.append('b')\nlog", context=ctx)
    await first

    assert second.text == "['a-start', 'a-end', 'b']"


async def test_a_client_timeout_interrupts_the_run_and_keeps_the_state(sbx: AsyncSandbox) -> None:
    await sbx.run_code("kept = 'yes'\ninterrupted = False")

    with pytest.raises(TimeoutException):
        await sbx.run_code(
            "import time\ntry:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n"
            "    interrupted = True\n    raise",
            timeout=1,
        )
    after = await sbx.run_code("(kept, interrupted)")

    assert after.error is None
    assert after.text == "('yes', True)"


async def test_a_client_that_disconnects_interrupts_the_run(sbx: AsyncSandbox) -> None:
    await sbx.run_code("progress = 0")
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            f"{sbx._jupyter_url}/execute",
            json={
                "code": "import time\nfor i in range(600):\n    progress = i\n"
                "    print(i, flush=True)\n    time.sleep(0.05)"
            },
            headers=_interpreter_headers(sbx),
        ) as response,
    ):
        async for line in response.aiter_lines():
            if '"stdout"' in line:
                break  # the run is under way: hang up
    at_disconnect = (await sbx.run_code("progress")).text
    later = (await sbx.run_code("progress")).text

    assert at_disconnect is not None and int(at_disconnect) < 599
    assert later == at_disconnect  # the loop stopped: nothing moves after the hang-up


async def test_running_out_of_memory_is_reported_and_the_context_restarts(
    sbx: AsyncSandbox,
) -> None:
    await sbx.run_code("before = 'set'")

    # More than the sandbox's memory limit (1 GiB by default), touched page by page.
    execution = await sbx.run_code("hog = b'x' * (1536 << 20)")
    after = await sbx.run_code("print('alive')\n'before' in globals()")

    assert execution.error is not None
    assert execution.error.name == "OutOfMemory"
    assert after.error is None
    assert after.logs.stdout == ["alive\n"]
    assert after.text == "False"  # a fresh kernel: the old state is gone


async def test_a_kernel_that_exits_is_reported_and_the_context_restarts(
    sbx: AsyncSandbox,
) -> None:
    execution = await sbx.run_code("import os\nos._exit(3)")
    after = await sbx.run_code("1 + 1")

    assert execution.error is not None
    assert execution.error.name == "KernelDied"
    assert "exit code 3" in execution.error.value
    assert after.text == "2"


async def test_a_kernel_that_cannot_come_back_is_reported_on_the_next_run(
    sbx: AsyncSandbox,
) -> None:
    # The cell plants a module that breaks ipykernel's start on the kernel's own import
    # path, then exits: the background restart fails, and the next run says why instead of
    # failing inside the server.
    planted = "/home/user/.local/lib/python-packages/zmq.py"
    died = await sbx.run_code(
        "import os\n"
        f"os.makedirs(os.path.dirname({planted!r}), exist_ok=True)\n"
        f"open({planted!r}, 'w').write('raise SystemExit(\"zmq is broken here\")')\n"
        "os._exit(3)"
    )
    broken = await sbx.run_code("1 + 1")
    await sbx.files.remove(planted)
    healed = await sbx.run_code("1 + 1")

    assert died.error is not None and died.error.name == "KernelDied"
    assert broken.error is not None
    assert broken.error.name == "KernelUnavailable"
    assert "zmq is broken here" in broken.error.value
    assert healed.error is None and healed.text == "2"


async def test_the_sandbox_cannot_replace_the_kernel_sockets(sbx: AsyncSandbox) -> None:
    # After start the kernel's socket directory belongs to root again: code in the sandbox
    # cannot swap a socket for a symlink that would lead the host elsewhere.
    execution = await sbx.run_code(
        "import os\n"
        "d = [e for e in os.listdir('/run/sandbox') if e.startswith('py-')][0]\n"
        "p = f'/run/sandbox/{d}/k-1'\n"
        "try:\n"
        "    os.rename(p, p + '.moved')\n"
        "    outcome = 'moved'\n"
        "except PermissionError:\n"
        "    outcome = 'refused'\n"
        "outcome"
    )

    assert execution.text == "refused"


async def test_a_cell_that_ignores_the_interrupt_gets_a_fresh_kernel(sbx: AsyncSandbox) -> None:
    await sbx.run_code("old_state = 1")

    with pytest.raises(TimeoutException):
        await sbx.run_code(
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
            timeout=1,
        )
    after = await sbx.run_code("'old_state' in globals()")

    assert after.error is None
    assert after.text == "False"


async def test_a_quiet_run_sends_keepalive_lines(sbx: AsyncSandbox) -> None:
    lines: list[dict[str, object]] = []
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream(
            "POST",
            f"{sbx._jupyter_url}/execute",
            json={"code": "import time\ntime.sleep(6)\nprint('woke')"},
            headers=_interpreter_headers(sbx),
        ) as response,
    ):
        async for line in response.aiter_lines():
            lines.append(json.loads(line))

    types = [line["type"] for line in lines]
    assert "keepalive" in types
    assert types.index("keepalive") < types.index("stdout")
    assert types[-1] == "end_of_execution"


async def test_sandbox_env_vars_reach_every_language(sandboxd: RunningSandboxd) -> None:
    hostile = "a'b\"c $d `e` \\f"
    sandbox = await AsyncSandbox.create(envs={"SK_SANDBOX_VAR": hostile}, **sandboxd.sdk_options())
    try:
        python = await sandbox.run_code("import os\nprint(os.environ['SK_SANDBOX_VAR'])")
        js = await sandbox.run_code("console.log(process.env.SK_SANDBOX_VAR)", language="js")
        bash = await sandbox.run_code('echo "$SK_SANDBOX_VAR"', language="bash")
    finally:
        await sandbox.kill()

    assert python.logs.stdout == [hostile + "\n"]
    assert js.logs.stdout == [hostile + "\n"]
    assert bash.logs.stdout == [hostile + "\n"]


class _SlowStartContext(KernelContext):
    """A context whose kernel start waits for the test: launched with the variables of then."""

    language = "python"

    def __init__(self) -> None:
        super().__init__(jail=None, envs={"A": "1"})  # type: ignore[arg-type]
        self.may_finish_start = asyncio.Event()
        self.launched = asyncio.Event()
        self.launched_with: dict[str, str] = {}
        self.applied: list[dict[str, str]] = []
        self._up = False

    @property
    def alive(self) -> bool:
        return self._up

    async def _start(self) -> None:
        self.launched_with = dict(self.envs)
        self.launched.set()
        await self.may_finish_start.wait()
        self._up = True

    async def _stop(self) -> None:
        self._up = False

    async def _apply_envs(self, envs: Mapping[str, str]) -> None:
        self.applied.append(dict(envs))

    async def run(self, code: str, env_vars: Mapping[str, str], emit: Emit) -> None:
        raise NotImplementedError

    async def interrupt(self) -> None:
        raise NotImplementedError


async def test_variables_set_while_a_kernel_starts_are_applied_once_it_is_up() -> None:
    """A pooled sandbox's JavaScript kernel may still be starting when create sets the
    sandbox's envs: it was launched without them, so they are applied when it is up (E2B's
    test_env_vars_overwrite failed 1 run in 20 before)."""
    context = _SlowStartContext()
    starting = asyncio.create_task(context.ensure_started())
    await asyncio.wait_for(context.launched.wait(), 5)
    assert context.launched_with == {"A": "1"}
    await context.set_envs({"B": "2"})
    assert context.applied == []  # not up yet
    context.may_finish_start.set()
    await starting
    assert context.applied == [{"A": "1", "B": "2"}]
    # A start that saw every variable at launch applies nothing more.
    await context.restart()
    assert context.applied == [{"A": "1", "B": "2"}]


async def test_envs_reach_a_pooled_sandboxs_javascript_however_soon_it_runs(
    sandboxd: RunningSandboxd,
) -> None:
    async def one(n: int) -> str:
        sandbox = await AsyncSandbox.create(envs={"SK_N": str(n)}, **sandboxd.sdk_options())
        try:
            js = await sandbox.run_code("console.log(process.env.SK_N)", language="js")
            return "".join(js.logs.stdout)
        finally:
            await sandbox.kill()

    assert await asyncio.gather(*(one(n) for n in range(6))) == [f"{n}\n" for n in range(6)]


async def test_restarting_a_busy_context_ends_its_cell_without_waiting(sbx: AsyncSandbox) -> None:
    ctx = await sbx.create_code_context()
    started = asyncio.Event()

    async def on_stdout(message: OutputMessage) -> None:
        started.set()

    busy = asyncio.create_task(
        sbx.run_code(
            "print('busy', flush=True)\nwhile True:\n    pass", context=ctx, on_stdout=on_stdout
        )
    )
    await asyncio.wait_for(started.wait(), 30)
    await sbx.restart_code_context(ctx)
    ended = await asyncio.wait_for(busy, 30)
    after = await sbx.run_code("'fresh'", context=ctx)

    assert ended.error is not None and ended.error.name == "KernelRestarted"
    assert after.text == "fresh"


async def test_a_message_too_large_for_the_host_ends_the_cell_and_restarts(
    sbx: AsyncSandbox,
) -> None:
    # One 50 MiB display message is over the host's per-message bound (streams are sent in
    # 1 MiB messages; a display is one): the connection drops, and the cell must end (not
    # hang until the client gives up) with a fresh kernel after.
    execution = await sbx.run_code(
        "from IPython.display import display\ndisplay({'text/plain': 'x' * (50 << 20)}, raw=True)",
        timeout=60,
    )
    after = await sbx.run_code("1 + 1")

    assert execution.error is not None
    assert execution.error.name == "KernelDisconnected"
    assert after.text == "2"
