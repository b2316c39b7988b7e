"""envd's Connect wire format on its own (as the SDK and E2B's envd speak it), spoken with a plain
HTTP client: unary JSON in and out with error codes mapped to HTTP statuses, and server
streams framed as envelopes ending with an end-of-stream envelope."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from e2b import Sandbox

from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd


@dataclass(frozen=True)
class WireSandbox:
    """A sandbox created over plain HTTP (so its access token is in hand) plus an SDK handle
    for setting up files."""

    sandbox_id: str
    token: str
    sdk: Sandbox


@pytest.fixture(scope="module")
def sandbox(sandboxd: RunningSandboxd) -> Iterator[WireSandbox]:
    key = {"X-API-KEY": sandboxd.api_key}
    created = httpx.post(
        f"{sandboxd.url}/v2/sandboxes", json={"templateID": "base"}, headers=key, timeout=30
    )
    assert created.status_code == 201
    body = created.json()
    assert body["envdVersion"] and body["envdAccessToken"] and body["trafficAccessToken"]
    sdk = Sandbox.connect(body["sandboxID"], **sandboxd.sdk_options())
    yield WireSandbox(body["sandboxID"], body["envdAccessToken"], sdk)
    httpx.delete(f"{sandboxd.url}/sandboxes/{body['sandboxID']}", headers=key, timeout=30)


def envd_headers(sandbox: WireSandbox, content_type: str) -> dict[str, str]:
    return {
        "E2b-Sandbox-Id": sandbox.sandbox_id,
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": sandbox.token,
        "Connect-Protocol-Version": "1",
        "Content-Type": content_type,
    }


def unary(
    sandboxd: RunningSandboxd, sandbox: WireSandbox, method: str, body: dict[str, object]
) -> httpx.Response:
    return httpx.post(
        f"{sandboxd.url}/{method}",
        json=body,
        headers=envd_headers(sandbox, "application/json"),
        timeout=10,
    )


def envelopes(raw: bytes) -> list[tuple[int, dict[str, object]]]:
    """Split a Connect stream body into (flags, JSON message) envelopes."""
    found = []
    while raw:
        flags, length = struct.unpack(">BI", raw[:5])
        found.append((flags, json.loads(raw[5 : 5 + length])))
        raw = raw[5 + length :]
    return found


def test_unary_calls_answer_proto3_json(sandboxd: RunningSandboxd, sandbox: WireSandbox) -> None:
    sandbox.sdk.files.write("wire/file.txt", "12345")
    answer = unary(sandboxd, sandbox, "filesystem.Filesystem/Stat", {"path": "wire/file.txt"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    entry = answer.json()["entry"]
    assert entry["type"] == "FILE_TYPE_FILE"
    assert entry["size"] == "5"  # int64 travels as a string
    assert entry["path"] == "/home/user/wire/file.txt"


@pytest.mark.parametrize(
    ("method", "body", "status", "code"),
    [
        ("filesystem.Filesystem/Stat", {"path": "wire/missing"}, 404, "not_found"),
        ("filesystem.Filesystem/MakeDir", {"path": "wire"}, 409, "already_exists"),
        ("process.Process/SendSignal", {"process": {"pid": 999999}}, 404, "not_found"),
        ("process.Process/SendInput", {"input": {"stdin": "eA=="}}, 400, "invalid_argument"),
        ("filesystem.Filesystem/GetWatcherEvents", {"watcherId": "nope"}, 404, "not_found"),
    ],
)
def test_unary_errors_carry_connect_codes_and_http_statuses(
    sandboxd: RunningSandboxd,
    sandbox: WireSandbox,
    method: str,
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    sandbox.sdk.files.make_dir("wire")
    answer = unary(sandboxd, sandbox, method, body)
    assert answer.status_code == status
    assert answer.json()["code"] == code
    assert answer.json()["message"]


def test_process_start_streams_envelopes_start_data_end(
    sandboxd: RunningSandboxd, sandbox: WireSandbox
) -> None:
    request = json.dumps(
        {"process": {"cmd": "/bin/bash", "args": ["-c", "echo wire; exit 4"]}, "stdin": False}
    ).encode()
    answer = httpx.post(
        f"{sandboxd.url}/process.Process/Start",
        content=struct.pack(">BI", 0, len(request)) + request,
        headers=envd_headers(sandbox, "application/connect+json"),
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/connect+json"
    frames = envelopes(answer.content)
    events = [message["event"] for flags, message in frames if flags == 0]
    assert "start" in events[0] and events[0]["start"]["pid"] > 0
    stdout = b"".join(
        base64.b64decode(e["data"]["stdout"])
        for e in events
        if "data" in e and "stdout" in e["data"]
    )
    assert stdout == b"wire\n"
    assert events[-1]["end"]["exitCode"] == 4
    assert events[-1]["end"]["status"] == "exit status 4"
    assert frames[-1] == (2, {})  # end of stream, no error


def test_a_stream_error_arrives_in_the_end_envelope(
    sandboxd: RunningSandboxd, sandbox: WireSandbox
) -> None:
    request = json.dumps({"process": {"pid": 999999}}).encode()
    answer = httpx.post(
        f"{sandboxd.url}/process.Process/Connect",
        content=struct.pack(">BI", 0, len(request)) + request,
        headers=envd_headers(sandbox, "application/connect+json"),
        timeout=10,
    )
    assert answer.status_code == 200
    flags, message = envelopes(answer.content)[-1]
    assert flags == 2
    assert message["error"]["code"] == "not_found"
