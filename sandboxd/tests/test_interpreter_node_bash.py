"""JavaScript, TypeScript and Bash through the real e2b-code-interpreter SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from e2b import SandboxException, TimeoutException
from e2b_code_interpreter import Sandbox

from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd

HOSTILE = "it's \"quoted\" $HOME `id` \\ ${x}\n'); process.exit(1); ('"


@pytest.fixture(scope="module")
def sbx(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    # Two local packages in the workspace: one CommonJS, one ESM-only (no require entry).
    sandbox.files.write(
        "/home/user/node_modules/greet-cjs/package.json",
        json.dumps({"name": "greet-cjs", "version": "1.0.0", "main": "index.js"}),
    )
    sandbox.files.write(
        "/home/user/node_modules/greet-cjs/index.js",
        "module.exports = { greet: (n) => `hello ${n}` };\n",
    )
    sandbox.files.write(
        "/home/user/node_modules/greet-esm/package.json",
        json.dumps(
            {
                "name": "greet-esm",
                "version": "1.0.0",
                "type": "module",
                "exports": {".": {"import": "./index.js"}},
            }
        ),
    )
    sandbox.files.write(
        "/home/user/node_modules/greet-esm/index.js",
        "export const shout = (n) => n.toUpperCase();\nexport default 'esm default';\n",
    )
    try:
        yield sandbox
    finally:
        sandbox.kill()


# --- JavaScript ------------------------------------------------------------------------


def test_javascript_splits_console_output_and_returns_the_last_value(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "console.log('out', 1); console.error('err'); [1, 2].map((x) => x * 2)", language="js"
    )

    assert execution.error is None
    assert execution.logs.stdout == ["out 1\n"]
    assert execution.logs.stderr == ["err\n"]
    assert execution.text == "[ 2, 4 ]"


def test_javascript_keeps_state_and_supports_top_level_await(sbx: Sandbox) -> None:
    sbx.run_code("const base = 40; function add(a, b) { return a + b }", language="javascript")

    execution = sbx.run_code(
        "const extra = await new Promise((r) => setTimeout(() => r(2), 10));\nadd(base, extra)",
        language="javascript",
    )
    later = sbx.run_code("extra", language="javascript")

    assert execution.text == "42"
    assert later.text == "2"


def test_javascript_cells_can_be_run_again_redeclaring_their_names(sbx: Sandbox) -> None:
    cell = "const total = (globalThis.runs = (globalThis.runs || 0) + 1);\nclass Box {}\ntotal"

    first = sbx.run_code(cell, language="js")
    again = sbx.run_code(cell, language="js")

    assert first.error is None and again.error is None, again.error
    assert (first.text, again.text) == ("1", "2")


def test_javascript_requires_and_imports_workspace_packages(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import shoutDefault, { shout } from 'greet-esm';\n"
        "const { greet } = require('greet-cjs');\n"
        "`${greet('ada')} ${shout('x')} ${shoutDefault}`",
        language="js",
    )
    later = sbx.run_code("shout('later')", language="js")

    assert execution.error is None, execution.error
    assert execution.text == "hello ada X esm default"
    assert later.text == "LATER"


def test_javascript_reports_a_thrown_error(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "function explode() { throw new RangeError('too far') }\nexplode()", language="js"
    )

    assert execution.error is not None
    assert execution.error.name == "RangeError"
    assert execution.error.value == "too far"
    assert "explode" in execution.error.traceback
    assert "node_kernel" not in execution.error.traceback


def test_javascript_reports_a_syntax_error_and_stays_usable(sbx: Sandbox) -> None:
    execution = sbx.run_code("let = = 1", language="js")
    after = sbx.run_code("1 + 1", language="js")

    assert execution.error is not None and execution.error.name == "SyntaxError"
    assert after.text == "2"


def test_javascript_sees_env_vars_with_hostile_quoting_only_during_the_run(
    sbx: Sandbox,
) -> None:
    execution = sbx.run_code(
        "process.stdout.write(process.env.SK_HOSTILE)", language="js", envs={"SK_HOSTILE": HOSTILE}
    )
    child = sbx.run_code(
        "process.stdout.write(require('child_process').execFileSync('printenv', ['SK_HOSTILE']))",
        language="js",
        envs={"SK_HOSTILE": HOSTILE},
    )
    after = sbx.run_code("String(process.env.SK_HOSTILE)", language="js")

    assert "".join(execution.logs.stdout) == HOSTILE
    assert "".join(child.logs.stdout) == HOSTILE + "\n"
    assert after.text == "undefined"


def test_a_javascript_timeout_interrupts_the_run_and_keeps_the_state(sbx: Sandbox) -> None:
    sbx.run_code("var survivor = 'still here'", language="js")

    with pytest.raises(TimeoutException):
        sbx.run_code("while (true) {}", language="js", timeout=1)
    after = sbx.run_code("survivor", language="js")

    assert after.text == "still here"


# --- TypeScript ------------------------------------------------------------------------


def test_typescript_runs_without_a_type_check_and_keeps_state(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(language="ts")
    sbx.run_code(
        "interface Point { x: number; y: number }\n"
        "const origin: Point = { x: 3, y: 4 };\n"
        "function norm(p: Point): number { return Math.hypot(p.x, p.y) }",
        context=ctx,
    )

    execution = sbx.run_code("norm(origin)", context=ctx)
    # A type error is not checked: the code runs as JavaScript would.
    untyped = sbx.run_code("const s: number = 'not a number' as any; s", context=ctx)

    assert ctx.language == "typescript"
    assert execution.text == "5"
    assert untyped.text == "not a number"


def test_typescript_imports_packages_and_awaits_at_top_level(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "import { shout } from 'greet-esm';\n"
        "const word: string = await Promise.resolve('ts');\n"
        "shout(word)",
        language="typescript",
    )

    assert execution.error is None, execution.error
    assert execution.text == "TS"


def test_typescript_reports_a_syntax_error(sbx: Sandbox) -> None:
    execution = sbx.run_code("let broken: = 1", language="ts")

    assert execution.error is not None
    assert execution.error.name == "SyntaxError"


def test_the_node_kernels_own_settings_are_not_visible_to_cells(sbx: Sandbox) -> None:
    # Language and esbuild's path reach the kernel as arguments it takes out of process.argv;
    # neither process.env nor the environment /proc keeps from the start holds a setting.
    for language in ("javascript", "typescript"):
        execution = sbx.run_code(
            "JSON.stringify([process.argv.length,"
            " Object.keys(process.env).filter((k) => k.startsWith('SANDBOXD_')),"
            " require('fs').readFileSync('/proc/self/environ', 'latin1').split('\\0')"
            ".filter((e) => e.startsWith('SANDBOXD_'))])",
            language=language,
        )
        assert execution.error is None, execution.error
        assert json.loads(execution.text) == [2, [], []]


# --- Bash ------------------------------------------------------------------------------


def test_bash_runs_in_the_workspace_and_streams_both_outputs(sbx: Sandbox) -> None:
    execution = sbx.run_code("pwd; echo oops >&2; echo done", language="bash")

    assert execution.error is None
    assert "".join(execution.logs.stdout) == "/home/user\ndone\n"
    assert execution.logs.stderr == ["oops\n"]


def test_bash_keeps_variables_functions_and_cwd_between_runs(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(language="bash")
    sbx.run_code('greeting=hello\nshout() { echo "$1!"; }\ncd /tmp', context=ctx)

    execution = sbx.run_code('shout "$greeting"; pwd', context=ctx)

    assert execution.error is None
    assert "".join(execution.logs.stdout) == "hello!\n/tmp\n"


def test_bash_exit_ends_the_shell_and_the_context_starts_afresh(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(language="bash")
    sbx.run_code("kept=yes", context=ctx)

    execution = sbx.run_code("exit 3", context=ctx)
    after = sbx.run_code('echo "[${kept-}]"; pwd', context=ctx)

    assert execution.error is not None and execution.error.value == "3"
    assert "".join(after.logs.stdout) == "[]\n/home/user\n"


def test_an_interrupted_bash_command_keeps_the_shell_state(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(language="bash")
    sbx.run_code("before=kept", context=ctx)

    with pytest.raises(TimeoutException):
        sbx.run_code("sleep 120; echo never", context=ctx, timeout=1)
    after = sbx.run_code('echo "$before"', context=ctx)

    assert after.logs.stdout == ["kept\n"]


def test_a_bash_cell_that_silences_its_shell_still_ends(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(language="bash")

    execution = sbx.run_code("exec >/dev/null 2>&1\necho hidden", context=ctx, timeout=30)

    assert execution.error is None
    assert execution.logs.stdout == [] and execution.logs.stderr == []


def test_bash_reports_a_non_zero_exit_as_an_error(sbx: Sandbox) -> None:
    execution = sbx.run_code("echo partial; exit 7", language="bash")

    assert execution.logs.stdout == ["partial\n"]
    assert execution.error is not None
    assert execution.error.value == "7"


def test_bash_gets_env_vars_with_hostile_quoting_for_one_run(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        'printf "%s" "$SK_HOSTILE"; printenv SK_HOSTILE',
        language="bash",
        envs={"SK_HOSTILE": HOSTILE},
    )
    after = sbx.run_code('echo "[${SK_HOSTILE-unset}]"', language="bash")

    assert "".join(execution.logs.stdout) == HOSTILE + HOSTILE + "\n"
    assert after.logs.stdout == ["[unset]\n"]


def test_bash_code_does_not_read_its_own_script_as_stdin(sbx: Sandbox) -> None:
    execution = sbx.run_code("cat\necho after-cat", language="bash")

    assert execution.error is None
    assert execution.logs.stdout == ["after-cat\n"]


def test_a_bash_timeout_stops_the_command(sbx: Sandbox) -> None:
    with pytest.raises(TimeoutException):
        sbx.run_code("sleep 120", language="bash", timeout=1)
    after = sbx.run_code("echo next", language="bash")

    assert after.logs.stdout == ["next\n"]


def test_a_javascript_await_that_never_settles_is_interrupted(sbx: Sandbox) -> None:
    with pytest.raises(TimeoutException):
        sbx.run_code("await new Promise(() => {})", language="js", timeout=1)
    after = sbx.run_code("'usable'", language="js")

    assert after.text == "usable"


def test_javascript_exiting_the_process_restarts_the_context(sbx: Sandbox) -> None:
    ctx = sbx.create_code_context(language="js")
    sbx.run_code("globalThis.before = 1", context=ctx)

    execution = sbx.run_code("process.exit(4)", context=ctx)
    after = sbx.run_code("typeof before", context=ctx)

    assert execution.error is not None
    assert execution.error.name == "KernelDied"
    assert after.text == "undefined"


@pytest.mark.parametrize(
    ("language", "program", "envs", "script"),
    [
        (
            "javascript",
            "node",
            {"NODE_OPTIONS": "--require /home/user/broken.js"},
            "console.error('node broke here'); process.exit(4);\n",
        ),
        (
            "bash",
            "bash",
            {"BASH_ENV": "/home/user/broken.js"},
            "echo bash broke here >&2; exit 4\n",
        ),
    ],
)
def test_a_kernel_that_dies_starting_says_how_and_what_it_printed(
    sandboxd: RunningSandboxd, language: str, program: str, envs: dict[str, str], script: str
) -> None:
    sandbox = Sandbox.create(envs=envs, **sandboxd.sdk_options())
    try:
        sandbox.files.write("/home/user/broken.js", script)
        with pytest.raises(SandboxException) as failure:
            sandbox.create_code_context(language=language)
        message = str(failure.value)
        assert "kernel_start_failed" in message
        assert f"{program} exited while starting (exit code 4)" in message
        assert f"{program} broke here" in message
    finally:
        sandbox.kill()
