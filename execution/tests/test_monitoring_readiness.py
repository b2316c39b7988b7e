"""/readyz and `manage.py doctor` with sandboxd up, stopped, and back at the same address."""

from __future__ import annotations

import secrets
import shutil
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from execution.tests.conftest import make_state_dir
from sandboxd.testing import running_sandboxd

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(240)]


def readyz(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    return response.status_code, response.json()


@pytest.mark.django_db
def test_readyz_and_doctor_name_sandboxd_when_it_stops_and_pass_when_it_is_back(
    client: Client, settings: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = make_state_dir("atlaschat-test-readyz-")
    api_key = secrets.token_hex(16)
    settings.E2B_API_KEY = ""
    settings.SANDBOXD_API_KEY = api_key
    try:
        with running_sandboxd(state_dir=state_dir, api_key=api_key) as server:
            settings.SANDBOXD_URL = server.url
            status, body = readyz(client)
            assert status == 200, body
            assert body["status"] == "ready"
            assert body["checks"]["sandbox_backend"]["state"] == "ok"
            assert body["checks"]["database"]["state"] == "ok"
            assert body["checks"]["channel_layer"]["state"] == "ok"
        port = urlsplit(server.url).port
        assert port is not None

        # Stopped: readyz names the part, says what to do; doctor agrees and exits 1.
        status, body = readyz(client)
        assert status == 503
        assert body["failing"] == ["sandbox_backend"]
        backend = body["checks"]["sandbox_backend"]
        assert backend["state"] == "failing"
        assert "does not answer" in backend["problem"]
        assert "start it" in backend["fix"]
        assert body["checks"]["database"]["state"] == "ok"
        with pytest.raises(CommandError, match="sandbox_backend") as failure:
            call_command("doctor")
        assert failure.value.returncode == 1
        printed = capsys.readouterr().out
        assert "FAIL  sandbox_backend: sandboxd does not answer" in printed
        # A sandbox is not even tried without a backend.
        assert "FAIL  sandbox_run: not tried: sandbox_backend failed" in printed

        # Back at the same address: ready again, and the doctor runs print(1) in a sandbox.
        with running_sandboxd(state_dir=state_dir, api_key=api_key, port=port):
            status, body = readyz(client)
            assert status == 200, body
            call_command("doctor")
            printed = capsys.readouterr().out
            assert "ok    sandbox_run: print(1) ran in" in printed
            assert "ok    package_egress" in printed
            assert "everything works" in printed
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.mark.django_db
def test_readyz_and_doctor_say_when_sandboxd_refuses_our_key(
    client: Client, settings: Any, sandboxd: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.SANDBOXD_API_KEY = "not-the-key"
    status, body = readyz(client)
    assert status == 503
    assert body["failing"] == ["sandbox_backend"]
    assert "refuses our SANDBOXD_API_KEY" in body["checks"]["sandbox_backend"]["problem"]
    with pytest.raises(CommandError, match="sandbox_backend"):
        call_command("doctor", "--quick")
    assert "var/sandboxd-api-key" in capsys.readouterr().out
