"""Any bytes a program writes reach the SDK losslessly, through the real SDK: UTF-8 as text,
and each byte that is not UTF-8 as the lone surrogate U+DC00+byte (Python's surrogateescape),
so `text.encode("utf-8", "surrogateescape")` is exactly what was written. And a message that
holds a lone surrogate (an exception's, say) still arrives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2b_code_interpreter import Sandbox

from sandboxd.testing import RunningSandboxd

# Bytes that are not UTF-8, NUL, and text whose multi-byte characters cross every read border.
AWKWARD = b"ok\xff\xfe\x00\x80 end\n" + "é😀".encode() * 50_000 + b"\xc3\n"


@pytest.fixture(scope="module")
def sbx(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    sandbox.files.write("/home/user/awkward.bin", AWKWARD)
    try:
        yield sandbox
    finally:
        sandbox.kill()


def written(lines: list[str]) -> bytes:
    return "".join(lines).encode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("language", "code"),
    [
        (
            "python",  # fds 1 and 2 written below the kernel's streams: os.write, a subprocess
            "import os, subprocess\n"
            "os.write(1, open('/home/user/awkward.bin', 'rb').read())\n"
            "subprocess.run(['cat', '/home/user/awkward.bin'], stdout=2)\n",
        ),
        ("bash", "cat /home/user/awkward.bin; cat /home/user/awkward.bin >&2"),
    ],
)
def test_bytes_a_cell_writes_to_stdout_and_stderr_arrive_exactly(
    sbx: Sandbox, language: str, code: str
) -> None:
    execution = sbx.run_code(code, language=language)
    assert execution.error is None
    assert written(execution.logs.stdout) == AWKWARD
    assert written(execution.logs.stderr) == AWKWARD


def test_random_bytes_arrive_as_they_were_written(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "head -c 300000 /dev/urandom | tee /home/user/random.bin", language="bash"
    )
    assert execution.error is None
    expected = sbx.files.read("/home/user/random.bin", format="bytes")
    assert len(expected) == 300_000
    assert written(execution.logs.stdout) == bytes(expected)


@pytest.mark.parametrize("message", ["x\udc80y", "x\ud800y", "nul \x00 and \udcff"])
def test_an_exception_whose_message_holds_a_lone_surrogate_is_reported(
    sbx: Sandbox, message: str
) -> None:
    execution = sbx.run_code(f"raise ValueError({message!r})")
    assert execution.error is not None
    assert (execution.error.name, execution.error.value) == ("ValueError", message)


def test_printed_lone_surrogates_and_a_json_result_with_them_arrive(sbx: Sandbox) -> None:
    execution = sbx.run_code(
        "print('a\\udc80b\\ud800c')\n"
        "from IPython.display import display\n"
        "display({'application/json': {'k': 'v\\udcff'}}, raw=True)\n"
    )
    assert execution.error is None
    assert execution.logs.stdout == ["a\udc80b\ud800c\n"]
    assert execution.results[0].json == {"k": "v\udcff"}


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("python", "print('a\\x85b\\u2028c\\u2029d')"),
        ("javascript", "console.log('a\\x85b\\u2028c\\u2029d')"),
        ("bash", "printf 'a\\xc2\\x85b\\xe2\\x80\\xa8c\\xe2\\x80\\xa9d\\n'"),
    ],
)
def test_characters_a_line_splitter_takes_for_line_ends_arrive_whole(
    sbx: Sandbox, language: str, code: str
) -> None:
    """U+0085, U+2028 and U+2029 are line ends to str.splitlines(), which the SDK's stream
    reader uses: sent raw inside an event, they cut it in two and the SDK raised
    JSONDecodeError."""
    execution = sbx.run_code(code, language=language)
    assert execution.error is None
    assert execution.logs.stdout == ["a\x85b\u2028c\u2029d\n"]


def test_code_with_such_a_character_gets_its_own_error_not_a_broken_stream(sbx: Sandbox) -> None:
    # What schemathesis sent: JavaScript's SyntaxError quotes the character back.
    execution = sbx.run_code("0\x85", language="javascript")
    assert execution.error is not None
    assert execution.error.name == "SyntaxError"
