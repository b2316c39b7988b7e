"""Ownership-scoped reads: the one way any entry point reaches a thread, a run or an agent.

REST views, pages, websocket consumers, agent tool calls and the MCP server all call these.
Another user's object is answered exactly like one that does not exist (ToolError 404
`<kind>_not_found`, never a 403 that would confirm it exists), and the attempt is audited
here, once, as an authorization SecurityEvent `<kind>_not_owned` with the object's id. A
malformed id is the same 404 (never a 500 or an HTML page).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Model, Q

from execution.audit import audit_refusal
from execution.caller import Caller
from execution.models import Agent, Execution, SecurityEvent, Thread, WorkspaceFile
from execution.services.errors import ToolError, not_found
from execution.services.validation import path_ancestors


def as_uuid(value: Any) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def _refuse_foreign(caller: Caller, kind: str, model: type[Model], pk: uuid.UUID) -> ToolError:
    """The 404 for an object the caller may not see, audited when it exists for another."""
    if model._default_manager.filter(pk=pk).exists():
        audit_refusal(
            caller=caller,
            kind=SecurityEvent.Kind.AUTHORIZATION,
            code=f"{kind}_not_owned",
            message=f"Access to another user's {kind} was refused (answered 404).",
            details={"object_id": str(pk)},
        )
    return not_found(kind)


def thread_get_owned(*, caller: Caller, thread_id: Any) -> Thread:
    """The caller's thread with that id; ToolError 404 `thread_not_found` otherwise."""
    pk = as_uuid(thread_id)
    if pk is None:
        raise not_found("thread")
    thread = Thread.objects.filter(pk=pk, owner=caller.account).first()
    if thread is None:
        raise _refuse_foreign(caller, "thread", Thread, pk)
    return thread


def thread_get_owned_or_new(*, caller: Caller, thread_id: Any) -> Thread:
    """The caller's thread with that id, or a new thread of theirs when no id is given."""
    if thread_id in (None, ""):
        return Thread.objects.create(owner=caller.account)
    return thread_get_owned(caller=caller, thread_id=thread_id)


def execution_get_owned(
    *, caller: Caller, execution_id: Any, thread: Thread | None = None
) -> Execution:
    """The caller's run with that id (in `thread`, when given); ToolError 404
    `execution_not_found` otherwise. A run of another user, or of another thread than the
    one named, is audited as `execution_not_owned`."""
    pk = as_uuid(execution_id)
    if pk is None:
        raise not_found("execution")
    rows = Execution.objects.filter(pk=pk, user=caller.account)
    if thread is not None:
        rows = rows.filter(thread=thread)
    execution = rows.first()
    if execution is None:
        raise _refuse_foreign(caller, "execution", Execution, pk)
    return execution


def agent_get_owned(*, caller: Caller, agent_id: Any) -> Agent:
    """The caller's agent with that id; ToolError 404 `agent_not_found` otherwise."""
    pk = as_uuid(agent_id)
    if pk is None:
        raise not_found("agent")
    agent = Agent.objects.filter(pk=pk, owner=caller.account).first()
    if agent is None:
        raise _refuse_foreign(caller, "agent", Agent, pk)
    return agent


def workspace_path_conflicts(*, thread: Thread, path: str) -> list[str]:
    """The thread's stored files that `path` cannot sit beside: a file at one of its parent
    directories, or files under `path` as a directory (see validation.validate_path_fits)."""
    rows = WorkspaceFile.objects.filter(thread=thread).filter(
        Q(path__in=path_ancestors(path)) | Q(path__startswith=f"{path}/")
    )
    return list(rows.values_list("path", flat=True)[:10])
