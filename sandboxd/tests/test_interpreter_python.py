"""Python through the real e2b-code-interpreter SDK (sync) against a real sandboxd."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from e2b import SandboxException
from e2b_code_interpreter import OutputMessage, Sandbox
from e2b_code_interpreter.models import Result

from sandboxd.interpreter.contexts import MAX_OUTPUT_BYTES
from sandboxd.interpreter.python_kernel import IOPUB_QUEUE_MESSAGES
from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd


@pytest.fixture(scope="module")
def sbx(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    try:
        yield sandbox
    finally:
        sandbox.kill()


def test_it_returns_the_last_expression_as_the_main_result(sbx: Sandbox) -> None:
    execution = sbx.run_code("x = 20\nx * 2 + 2")

    assert execution.error is None
    assert execution.text == "42"
    assert [r.is_main_result for r in execution.results] == [True]
    assert execution.execution_count is not None and execution.execution_count >= 1


def test_it_keeps_stdout_and_stderr_apart(sbx: Sandbox) -> None:
    execution = sbx.run_code("import sys\nprint('to out')\nprint('to err', file=sys.stderr)")

    assert "".join(execution.logs.stdout) == "to out\n"
    assert "".join(execution.logs.stderr) == "to err\n"
    assert execution.results == []


def test_a_burst_of_twenty_thousand_flushed_prints_arrives_whole_and_in_order(
    sbx: Sandbox,
) -> None:
    # Far more iopub messages than ZeroMQ queues by default: none may be dropped, and the
    # run must still end (its closing `idle` status is one of those messages).
    lines: list[str] = []
    execution = sbx.run_code(
        "for i in range(20000):\n    print(i, flush=True)",
        on_stdout=lambda message: lines.append(message.line),
        timeout=120,
    )
    expected = "".join(f"{i}\n" for i in range(20000))
    assert "".join(lines) == expected
    assert "".join(execution.logs.stdout) == expected
    assert execution.error is None


def test_the_kernel_and_the_host_both_queue_deeply_on_iopub(sbx: Sandbox) -> None:
    # Both ends of the iopub pipe: the kernel's send queue and sandboxd's receive queue.
    execution = sbx.run_code(
        "import zmq\nget_ipython().kernel.iopub_thread.socket.getsockopt(zmq.SNDHWM)"
    )
    assert execution.error is None
    assert execution.text == str(IOPUB_QUEUE_MESSAGES)
    # Neither the launcher's directory nor its setting shows in the user's process.
    path = sbx.run_code("import sys\n[p for p in sys.path if 'sandboxd' in p]")
    assert path.text == "[]"
    # Nor in the kernel's environment: not os.environ, nor the one it started with, which
    # /proc keeps for any process of the sandbox to read.
    env = sbx.run_code(
        "import os\n"
        "[k for k in os.environ if k.startswith('SANDBOXD_')]"
        " + [e for e in open('/proc/self/environ', 'rb').read().split(b'\\0')"
        " if e.startswith(b'SANDBOXD_')]"
    )
    assert env.error is None
    assert env.text == "[]"


def test_a_cell_whose_idle_status_is_lost_still_ends_and_says_so(sbx: Sandbox) -> None:
    # The kernel itself is made to drop its `idle` statuses, as a full ZeroMQ queue would.
    drop_idle = (
        "k = get_ipython().kernel\n"
        "_sandboxd_publish = k._publish_status\n"
        "k._publish_status = lambda status, channel, parent=None: (\n"
        "    None if status == 'idle' else _sandboxd_publish(status, channel, parent))\n"
        "print('before the end')"
    )
    lost = sbx.run_code(drop_idle, timeout=30)
    assert "".join(lost.logs.stdout) == "before the end\n"
    assert "end-of-cell message was lost" in "".join(lost.logs.stderr)
    assert lost.error is None
    # The context goes on working; once the statuses flow again, nothing is flagged.
    restored = sbx.run_code("k._publish_status = _sandboxd_publish\nprint('next')", timeout=30)
    assert "".join(restored.logs.stdout) == "next\n"
    assert restored.logs.stderr == []


def test_it_keeps_variables_imports_and_functions_between_runs(sbx: Sandbox) -> None:
    sbx.run_code("import math\ndef area(r):\n    return math.pi * r * r\nradius = 2")

    execution = sbx.run_code("round(area(radius), 3)")

    assert execution.text == "12.566"


def test_it_reports_a_user_exception_as_an_error_event(sbx: Sandbox) -> None:
    execution = sbx.run_code("def f():\n    return 1 / 0\nprint('before')\nf()")

    assert execution.error is not None
    assert execution.error.name == "ZeroDivisionError"
    assert execution.error.value == "division by zero"
    assert "return 1 / 0" in execution.error.traceback
    assert "\x1b[" not in execution.error.traceback  # plain text, no ANSI colours
    assert execution.logs.stdout == ["before\n"]


def test_it_reports_a_syntax_error(sbx: Sandbox) -> None:
    execution = sbx.run_code("def broken(:\n    pass")

    assert execution.error is not None
    assert execution.error.name == "SyntaxError"


def test_a_matplotlib_figure_comes_back_as_a_png_result(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()"
    )

    assert execution.error is None
    pngs = [r for r in execution.results if r.png]
    assert len(pngs) == 1
    assert pngs[0].is_main_result is False  # display_data, not the cell's value
    assert base64.b64decode(pngs[0].png).startswith(b"\x89PNG\r\n\x1a\n")


def test_a_dataframe_comes_back_as_html_and_text(sbx: Sandbox) -> None:
    execution = sbx.run_code("import pandas as pd\npd.DataFrame({'name': ['ada'], 'n': [7]})")

    assert execution.error is None
    (result,) = execution.results
    assert result.is_main_result
    assert result.html is not None and "<table" in result.html and "ada" in result.html
    assert result.text is not None and "ada" in result.text and "7" in result.text


def test_env_vars_with_hostile_quoting_reach_the_code_and_are_restored(sbx: Sandbox) -> None:
    hostile = "it's \"quoted\" $HOME `id` \\n ${x}\n'); import os; os._exit(1); ('"

    execution = sbx.run_code(
        "import os, subprocess\n"
        "print(repr(os.environ['SK_HOSTILE']))\n"
        "print(subprocess.run(['printenv', 'SK_HOSTILE'], capture_output=True, text=True).stdout)",
        envs={"SK_HOSTILE": hostile},
    )
    after = sbx.run_code("import os\nos.environ.get('SK_HOSTILE', 'unset')")

    assert execution.error is None
    assert "".join(execution.logs.stdout) == repr(hostile) + "\n" + hostile + "\n\n"
    assert after.text == "unset"


def test_on_stdout_fires_while_the_cell_is_still_running(sbx: Sandbox) -> None:
    # The cell waits for a file that only the on_stdout callback creates: the run can only
    # finish normally if its first line reached the client before the cell ended.
    sbx.files.remove("/home/user/go") if sbx.files.exists("/home/user/go") else None
    code = (
        "import os, time\n"
        "print('ready', flush=True)\n"
        "for _ in range(600):\n"
        "    if os.path.exists('/home/user/go'):\n"
        "        print('go seen')\n"
        "        break\n"
        "    time.sleep(0.05)\n"
        "else:\n"
        "    print('never saw go')\n"
    )
    seen: list[str] = []

    def on_stdout(message: OutputMessage) -> None:
        seen.append(message.line)
        if message.line == "ready\n":
            sbx.files.write("/home/user/go", "1")

    execution = sbx.run_code(code, on_stdout=on_stdout)

    assert seen == ["ready\n", "go seen\n"]
    assert execution.logs.stdout == seen


def test_on_result_receives_each_display_and_the_main_result(sbx: Sandbox) -> None:
    received: list[Result] = []

    sbx.run_code(
        "from IPython.display import display, HTML\ndisplay(HTML('<b>x</b>'))\n'done'",
        on_result=received.append,
    )

    assert [(r.is_main_result, r.html, r.text) for r in received] == [
        (False, "<b>x</b>", "<IPython.core.display.HTML object>"),
        (True, None, "done"),
    ]


def test_a_flood_of_output_is_cut_at_the_cap_and_flagged(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import sys\nfor _ in range(48):\n    sys.stdout.write('x' * (1 << 20))\n'finished'"
    )

    stdout_bytes = sum(len(chunk) for chunk in execution.logs.stdout)
    assert 0 < stdout_bytes <= MAX_OUTPUT_BYTES
    assert any("output truncated" in line for line in execution.logs.stderr)
    assert execution.error is None


# Makes ipykernel exit when asked for kernel_info, the last step of sandboxd's kernel start.
_DIE_AT_KERNEL_INFO = """
import importlib.abc, importlib.util, os, sys

# ipykernel later captures fds 1 and 2 through a thread that os._exit would not wait for.
STDERR = os.dup(2)

class DieAtKernelInfo(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "ipykernel.kernelbase":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)

            def die(*args, **kwargs):
                os.write(STDERR, b"asked for kernel_info: leaving")
                os._exit(7)

            module.Kernel.kernel_info_request = die

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, DieAtKernelInfo())
"""


@pytest.mark.parametrize(
    ("module", "source", "exit_code", "printed"),
    [
        pytest.param(
            "zmq.py",
            "import sys\nprint('no zmq in here', file=sys.stderr)\nraise SystemExit(3)\n",
            3,
            "no zmq in here",
            id="importing-zmq",
        ),
        pytest.param(
            "sitecustomize.py",
            _DIE_AT_KERNEL_INFO,
            7,
            "asked for kernel_info: leaving",
            id="answering-kernel_info",
        ),
    ],
)
def test_a_kernel_that_dies_starting_says_how_and_what_it_printed(
    sandboxd: RunningSandboxd, module: str, source: str, exit_code: int, printed: str
) -> None:
    # The sandbox's PYTHONPATH leads to a module the kernel imports at start.
    sandbox = Sandbox.create(envs={"PYTHONPATH": "/home/user/site"}, **sandboxd.sdk_options())
    try:
        sandbox.files.write(f"/home/user/site/{module}", source)
        # A new context starts a new kernel (the default one may come pre-started).
        with pytest.raises(SandboxException) as failure:
            sandbox.create_code_context(language="python")
        message = str(failure.value)
        assert "kernel_start_failed" in message
        assert f"exit code {exit_code}" in message
        assert printed in message
        # The sandbox is still usable in another language.
        assert sandbox.run_code("echo fine", language="bash").logs.stdout == ["fine\n"]
    finally:
        sandbox.kill()


def test_lone_surrogates_and_nul_in_output_arrive_exactly(sbx: Sandbox) -> None:
    # jupyter_client's packer cannot encode a lone surrogate as UTF-8: without the kernel's
    # lossless packer this output was lost (with everything else in the same flush) and a
    # traceback went to stderr instead.
    execution = sbx.run_code(
        "import sys\nprint('a\\ud800b')\nsys.stdout.write('\\x00z\\udfff\\n')\n'r\\udc80'"
    )

    assert execution.error is None
    assert "".join(execution.logs.stdout) == "a\ud800b\n\x00z\udfff\n"
    assert execution.logs.stderr == []
    assert execution.text == "r\\udc80"  # a string's repr, its quotes taken off as E2B does


def test_lone_surrogates_printed_by_javascript_arrive_exactly(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "console.log('a\\ud800b'); process.stdout.write('x\\udfffy\\n')", language="javascript"
    )

    assert execution.error is None
    assert "".join(execution.logs.stdout) == "a\ud800b\nx\udfffy\n"
