"""Faults: a sandbox killed behind Django's back, sandboxd stopped and started again, and a
server process killed in the middle of a run. All with real processes, nothing simulated."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connections

from execution.models import Execution, PackageInstall, Thread, WorkspaceFile
from execution.sandbox.e2b import E2BBackend
from execution.services.sandbox_sessions import sessions
from execution.tests.conftest import make_state_dir, point_settings_at
from sandboxd.testing import running_sandboxd

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(300)]


@pytest.fixture
def client(jwt_client: Any, alice: Any) -> Any:
    return jwt_client(alice)


def execute(client: Any, thread: Thread, code: str, **extra: Any) -> Any:
    return client.post(
        "/api/code/execute",
        {"thread_id": str(thread.pk), "language": "python", "code": code, **extra},
        format="json",
    )


@pytest.mark.django_db
def test_a_sandbox_killed_behind_djangos_back_is_recreated_with_files_and_packages(
    client: Any, alice: Any, sandboxd: Any
) -> None:
    thread = Thread.objects.create(owner=alice)
    client.post(
        "/api/code/install-packages",
        {"thread_id": str(thread.pk), "packages": ["six==1.17.0"]},
        format="json",
    )
    client.post(
        "/api/code/write-file",
        {"thread_id": str(thread.pk), "path": "notes/todo.txt", "content": "survives"},
        format="json",
    )
    assert (
        execute(client, thread, "open('made_by_code.txt', 'w').write('me too')").status_code == 201
    )
    thread.refresh_from_db()
    old_sandbox = thread.sandbox_id

    # Killed directly through the SDK: Django's cache still believes in it.
    assert sessions.call(E2BBackend().sdk_class.kill(old_sandbox)) is True

    response = execute(
        client,
        thread,
        "import six\nprint(six.__version__)\nprint(open('notes/todo.txt').read())\n"
        "print(open('made_by_code.txt').read())",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["stdout"]) == ("succeeded", "1.17.0\nsurvives\nme too\n")
    thread.refresh_from_db()
    assert thread.sandbox_id and thread.sandbox_id != old_sandbox
    restored = body["details"]["restored"]
    assert (restored["files"], restored["packages"], restored["failures"]) == (
        2,
        ["six==1.17.0"],
        [],
    )
    assert body["details"]["recreated"] is True


@pytest.mark.django_db
def test_sandboxd_stopped_answers_503_loses_nothing_and_works_again_when_back(
    client: Any, alice: Any, settings: Any
) -> None:
    state_dirs = [make_state_dir("atlaschat-fault-a-"), make_state_dir("atlaschat-fault-b-")]
    key = secrets.token_hex(16)
    try:
        with contextlib.ExitStack() as first_server:
            server = first_server.enter_context(
                running_sandboxd(state_dir=state_dirs[0], api_key=key)
            )
            point_settings_at(settings, server)
            thread = Thread.objects.create(owner=alice)
            client.post(
                "/api/code/write-file",
                {"thread_id": str(thread.pk), "path": "kept.txt", "content": "precious"},
                format="json",
            )
            assert execute(client, thread, "print('up')").json()["stdout"] == "up\n"
        # The sandbox server is gone now.

        started = time.monotonic()
        down = execute(client, thread, "print('while down')")
        write = client.post(
            "/api/code/write-file",
            {"thread_id": str(thread.pk), "path": "new.txt", "content": "x"},
            format="json",
        )

        assert down.status_code == 503, down.content
        assert down.json()["error"]["code"] == "sandbox_unavailable"
        assert down["Retry-After"]
        assert time.monotonic() - started < 30
        failed_run = Execution.objects.get(pk=down.json()["error"]["details"]["execution_id"])
        assert failed_run.status == "error"
        assert (write.status_code, write.json()["error"]["code"]) == (503, "sandbox_unavailable")
        # Nothing the user had is lost, nothing half-written appeared.
        assert [f.path for f in WorkspaceFile.objects.filter(thread=thread)] == ["kept.txt"]

        with running_sandboxd(state_dir=state_dirs[1], api_key=key) as again:
            point_settings_at(settings, again)
            back = execute(client, thread, "print(open('kept.txt').read())")
            assert back.status_code == 201, back.content
            assert back.json()["stdout"] == "precious\n"
            sessions.forget_all(kill=True)
    finally:
        for path in state_dirs:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.django_db
def test_a_failed_install_while_sandboxd_is_down_is_stored_failed_and_not_replayed(
    client: Any, alice: Any, settings: Any
) -> None:
    settings.E2B_API_KEY = ""
    settings.SANDBOXD_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    sessions.forget_all()
    thread = Thread.objects.create(owner=alice)

    response = client.post(
        "/api/code/install-packages",
        {"thread_id": str(thread.pk), "packages": ["six"]},
        format="json",
    )

    assert (response.status_code, response.json()["error"]["code"]) == (503, "sandbox_unavailable")
    install = PackageInstall.objects.get(thread=thread)
    assert install.status == "failed" and "sandbox_unavailable" in install.log


def test_a_run_in_flight_when_the_server_stops_is_marked_error_at_the_next_start(
    sandboxd_server: Any, django_db_setup: Any, django_db_blocker: Any
) -> None:
    from execution.tests.live import (
        bearer_headers,
        create_user,
        live_database,
        running_daphne,
        server_env,
    )

    directory = Path(make_state_dir("atlaschat-fault-live-"))
    try:
        with django_db_blocker.unblock(), live_database(directory) as database:
            alias = database.alias
            env = server_env(
                database=database,
                sandboxd_url=sandboxd_server.url,
                sandboxd_api_key=sandboxd_server.api_key,
                redis_url=None,
            )
            user = create_user(alias, "alice-live")
            with running_daphne(env=env, log_path=directory / "daphne.log") as server:
                answer = httpx.post(
                    f"{server.http_url}/api/code/execute",
                    json={"code": "import time\nprint('busy', flush=True)\ntime.sleep(60)",
                          "language": "python", "wait": False},
                    headers=bearer_headers(user),
                    timeout=30,
                )  # fmt: skip
                assert answer.status_code == 202, answer.text
                execution_id = answer.json()["id"]
                rows = Execution.objects.using(alias)
                deadline = time.monotonic() + 60
                while rows.get(pk=execution_id).stdout != "busy\n":
                    assert time.monotonic() < deadline, server.log_tail()
                    time.sleep(0.1)
                server.process.kill()  # no goodbye: the process is gone mid-run
                server.process.wait(10)
                assert rows.get(pk=execution_id).status == "running"

            # The next start runs recover_executions before serving (scripts/run.sh).
            subprocess.run(
                [sys.executable, "manage.py", "recover_executions"],
                cwd=Path(__file__).resolve().parents[2],
                env=env,
                check=True,
                capture_output=True,
                timeout=60,
            )
            execution = Execution.objects.using(alias).get(pk=execution_id)
            assert execution.status == "error"
            assert execution.error["code"] == "server_restarted"
            assert execution.stdout == "busy\n"  # what it printed before is kept
            assert execution.finished_at is not None
            connections[alias].close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
