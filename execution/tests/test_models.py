"""The execution data model: defaults, status rules, file identity and content, agent tools."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from execution.models import Agent, Execution, Language, Source, Thread, WorkspaceFile

pytestmark = pytest.mark.django_db

Status = Execution.Status
FINAL = sorted(Execution.FINAL_STATUSES)


@pytest.fixture
def thread(alice: AbstractBaseUser) -> Thread:
    return Thread.objects.create(owner=alice)


@pytest.fixture
def media_root(settings: object, tmp_path: Path) -> Path:
    """Store file contents in a temporary directory for the test."""
    settings.STORAGES = {  # type: ignore[attr-defined]
        **settings.STORAGES,  # type: ignore[attr-defined]
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    return tmp_path


def new_execution(thread: Thread, **fields: object) -> Execution:
    return Execution.objects.create(
        thread=thread, user=thread.owner, language=Language.PYTHON, code="print(1)", **fields
    )


def test_a_thread_starts_untitled_without_a_sandbox(thread: Thread) -> None:
    assert thread.title == "Untitled thread"
    assert thread.sandbox_id == ""
    assert thread.context_ids == {}


def test_an_execution_starts_queued_and_empty(thread: Thread) -> None:
    execution = new_execution(thread)
    execution.refresh_from_db()
    assert execution.status == Status.QUEUED
    assert execution.source == Source.API
    assert (execution.stdout, execution.stderr, execution.results) == ("", "", [])
    assert execution.error is None
    assert execution.exit_code is None
    assert execution.truncated is False
    assert execution.last_seq == 0
    assert execution.is_final is False


@pytest.mark.parametrize(
    "path",
    [
        [Status.RUNNING, Status.SUCCEEDED],
        [Status.RUNNING, Status.FAILED],
        [Status.RUNNING, Status.TIMED_OUT],
        [Status.RUNNING, Status.CANCELLED],
        [Status.RUNNING, Status.ERROR],
        [Status.CANCELLED],
        [Status.REJECTED],
        [Status.ERROR],
    ],
)
def test_allowed_status_paths_end_in_a_final_status(thread: Thread, path: list[str]) -> None:
    execution = new_execution(thread)
    for status in path:
        execution.transition_to(status)
    execution.save()
    execution.refresh_from_db()
    assert execution.status == path[-1]
    assert execution.is_final


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (Status.QUEUED, Status.SUCCEEDED),  # nothing succeeds without running
        (Status.QUEUED, Status.FAILED),
        (Status.QUEUED, Status.QUEUED),
        (Status.RUNNING, Status.QUEUED),
        (Status.RUNNING, Status.REJECTED),  # rejection happens before a run starts
    ],
)
def test_a_skipped_or_backward_transition_is_refused(
    thread: Thread, start: str, target: str
) -> None:
    execution = new_execution(thread, status=start)
    with pytest.raises(ValueError, match=f"{start} -> {target} is not allowed"):
        execution.transition_to(target)
    assert execution.status == start


@pytest.mark.parametrize("final", FINAL)
def test_a_final_status_never_changes_again(thread: Thread, final: str) -> None:
    execution = new_execution(thread, status=final)
    for target in Status.values:
        assert not execution.can_transition_to(target)
        with pytest.raises(ValueError):
            execution.transition_to(target)


def test_executions_outlive_their_thread(thread: Thread) -> None:
    execution = new_execution(thread)
    thread.delete()
    execution.refresh_from_db()
    assert execution.thread is None


def test_a_user_with_executions_cannot_be_deleted(thread: Thread, alice: AbstractBaseUser) -> None:
    new_execution(thread)
    with pytest.raises(ProtectedError):
        alice.delete()


def test_a_path_is_unique_within_a_thread(thread: Thread, media_root: Path) -> None:
    WorkspaceFile(thread=thread, path="data/a.csv").set_content(b"1")
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkspaceFile(thread=thread, path="data/a.csv").set_content(b"2")


def test_the_same_path_may_exist_in_another_thread(
    thread: Thread, bob: AbstractBaseUser, media_root: Path
) -> None:
    other = Thread.objects.create(owner=bob)
    WorkspaceFile(thread=thread, path="a.txt").set_content(b"alice")
    WorkspaceFile(thread=other, path="a.txt").set_content(b"bob")
    assert WorkspaceFile.objects.filter(path="a.txt").count() == 2


def test_set_content_stores_the_bytes_with_size_and_sha256(
    thread: Thread, media_root: Path
) -> None:
    data = b"name,value\nx,1\n" * 100
    file = WorkspaceFile(thread=thread, path="data/table.csv")
    file.set_content(data)
    file.refresh_from_db()
    assert file.size == len(data)
    assert file.sha256 == hashlib.sha256(data).hexdigest()
    assert file.read_content() == data
    stored = media_root / file.content.name
    assert stored.read_bytes() == data
    # Stored under the thread with a random name: the workspace path is not a storage path.
    assert file.content.name.startswith(f"workspaces/{thread.pk}/")
    assert "table.csv" not in file.content.name


def test_empty_content_has_the_empty_hash(thread: Thread, media_root: Path) -> None:
    file = WorkspaceFile(thread=thread, path="empty")
    file.set_content(b"")
    assert (file.size, file.sha256) == (0, hashlib.sha256(b"").hexdigest())


def test_new_content_replaces_the_old_file_once_committed(
    thread: Thread, media_root: Path, django_capture_on_commit_callbacks: object
) -> None:
    file = WorkspaceFile(thread=thread, path="notes.txt")
    file.set_content(b"first")
    first_stored = media_root / file.content.name
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        file.set_content(b"second version")
    file.refresh_from_db()
    assert file.read_content() == b"second version"
    assert file.size == len(b"second version")
    assert not first_stored.exists()


def test_a_rolled_back_rewrite_keeps_the_old_content(thread: Thread, media_root: Path) -> None:
    file = WorkspaceFile(thread=thread, path="notes.txt")
    file.set_content(b"kept")
    with pytest.raises(RuntimeError), transaction.atomic():
        file.set_content(b"lost")
        raise RuntimeError("abort the write")
    file.refresh_from_db()
    assert file.read_content() == b"kept"


def test_set_content_without_save_leaves_the_row_to_the_caller(
    thread: Thread, media_root: Path
) -> None:
    file = WorkspaceFile(thread=thread, path="later.txt")
    file.set_content(b"abc", save=False)
    assert file.size == 3
    assert not WorkspaceFile.objects.filter(pk=file.pk).exists()
    file.save()
    assert WorkspaceFile.objects.get(pk=file.pk).sha256 == hashlib.sha256(b"abc").hexdigest()


def test_an_agent_accepts_known_tools(alice: AbstractBaseUser) -> None:
    agent = Agent(owner=alice, name="helper", allowed_tools=["execute_code", "read_file"])
    agent.full_clean()
    agent.save()
    assert agent.allows("execute_code")
    assert not agent.allows("install_packages")


def test_an_agent_starts_active_with_no_tools(alice: AbstractBaseUser) -> None:
    agent = Agent.objects.create(owner=alice, name="new")
    assert agent.is_active
    assert agent.allowed_tools == []
    assert not agent.allows("execute_code")


def test_an_unknown_tool_is_refused_by_name(alice: AbstractBaseUser) -> None:
    agent = Agent(owner=alice, name="helper", allowed_tools=["execute_code", "rm_rf", "curl"])
    with pytest.raises(ValidationError) as error:
        agent.full_clean()
    assert error.value.message_dict["allowed_tools"] == ["Unknown tools: curl, rm_rf"]


@pytest.mark.parametrize("tools", ["execute_code", {"execute_code": True}, [1, 2]])
def test_allowed_tools_must_be_a_list_of_names(alice: AbstractBaseUser, tools: object) -> None:
    agent = Agent(owner=alice, name="helper", allowed_tools=tools)
    with pytest.raises(ValidationError) as error:
        agent.full_clean()
    assert "allowed_tools" in error.value.message_dict
    # Even unvalidated, such a value grants nothing (a string is not searched by substring).
    assert not agent.allows("execute_code")


def test_an_inactive_agent_is_allowed_nothing(alice: AbstractBaseUser) -> None:
    agent = Agent.objects.create(
        owner=alice, name="off", allowed_tools=["execute_code"], is_active=False
    )
    assert not agent.allows("execute_code")


def test_agent_names_are_unique_per_owner(alice: AbstractBaseUser, bob: AbstractBaseUser) -> None:
    Agent.objects.create(owner=alice, name="helper")
    Agent.objects.create(owner=bob, name="helper")
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.create(owner=alice, name="helper")
