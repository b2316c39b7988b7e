"""The browser workspace: server-rendered pages and their HTMX partials.

Every GET view renders the whole page, or only its partial when htmx asks (`request.htmx`),
so each link keeps a real href and works without JavaScript. Every object is reached through
the selectors (execution/selectors.py): another user's thread or run is a 404, as if it did
not exist, audited there. Writes go through the ToolExecutor, the same service the API and
agents use; a ToolError it raises (validation, quota, sandbox unavailable) comes back to the
person as a form error with the service's own message and the matching HTTP status, never
as a trace.
Live output does not pass through these views: the page's script talks to the websocket
`ws/threads/<id>/` (see static/js/workspace.js).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import close_old_connections, connection
from django.db.models import QuerySet
from django.db.models.functions import Coalesce, Greatest
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from atlaschat.views import home as landing_page
from execution.api.throttles import InstallRateThrottle
from execution.caller import Caller
from execution.forms import (
    FilePathForm,
    NewFileForm,
    PackageInstallForm,
    SaveFileForm,
    ThreadSearchForm,
    ThreadTitleForm,
    UploadFileForm,
)
from execution.models import (
    Execution,
    Language,
    PackageInstall,
    RunError,
    Source,
    Thread,
    WorkspaceFile,
)
from execution.sandbox import get_backend
from execution.selectors import execution_get_owned, thread_get_owned
from execution.services import validation
from execution.services.errors import ToolError
from execution.services.runtime import service_portal
from execution.services.tool_executor import ToolExecutor
from execution.stream import result_reference
from execution.terminal import strip_ansi
from execution.throttling import check_rate

logger = logging.getLogger(__name__)


class HtmxHttpRequest(HttpRequest):
    """A request as django-htmx's middleware leaves it (its documented typing pattern)."""

    htmx: HtmxDetails


# How many runs the history shows (newest first); older ones stay in the API and the admin.
HISTORY_LENGTH = 50
# Languages of the editor's select, with Monaco's name for each one's highlighting.
EDITOR_LANGUAGES = [
    {"value": Language.PYTHON, "label": "Python", "monaco": "python"},
    {"value": Language.JAVASCRIPT, "label": "JavaScript", "monaco": "javascript"},
    {"value": Language.TYPESCRIPT, "label": "TypeScript", "monaco": "typescript"},
    {"value": Language.BASH, "label": "Bash", "monaco": "shell"},
]


# --- access -----------------------------------------------------------------------------------


def page_caller(request: HtmxHttpRequest) -> Caller:
    """The caller of a page request (source browser)."""
    return Caller.from_request(request, source=Source.BROWSER)


def owned_thread(request: HtmxHttpRequest, thread_id: uuid.UUID) -> Thread:
    """The user's thread with that id; Http404 for any other (the selector audits another
    user's, as every entry point does)."""
    try:
        return thread_get_owned(caller=page_caller(request), thread_id=thread_id)
    except ToolError as error:
        raise Http404(error.message) from None


def owned_execution(request: HtmxHttpRequest, thread: Thread, execution_id: uuid.UUID) -> Execution:
    """A run of the user's `thread`; Http404 otherwise (another user's run, or a run of
    another thread, is audited)."""
    try:
        return execution_get_owned(
            caller=page_caller(request), execution_id=execution_id, thread=thread
        )
    except ToolError as error:
        raise Http404(error.message) from None


def page_or_partial(
    request: HtmxHttpRequest,
    page: str,
    partial: str,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> HttpResponse:
    """Render `partial` for an htmx request, else the full `page` (which includes it)."""
    template = partial if request.htmx else page
    return render(request, template, context, status=status)


def thread_panel(
    request: HtmxHttpRequest,
    partial: str,
    context: dict[str, Any],
    *,
    heading: str,
    status: int = 200,
) -> HttpResponse:
    """A thread panel (files, history, packages, a run): its `partial` alone for htmx, else
    one page for every panel (templates/execution/thread_panel.html) showing the partial
    under `heading` and the thread's title."""
    page = {**context, "panel_partial": partial, "panel_heading": heading}
    return page_or_partial(request, "execution/thread_panel.html", partial, page, status=status)


def add_tool_error(form: Any, error: ToolError, field: str | None = None) -> None:
    """Show a service refusal on the form, in the service's words and with its code."""
    form.add_error(field, f"{error.message} ({error.code})")


# --- threads ----------------------------------------------------------------------------------


def search_threads(user: Any, query: str) -> QuerySet[Thread]:
    """The user's threads whose title contains `query`, most recently used first.

    "Used" is the later of a change to the thread (create, rename) and its last run
    (`last_used_at`, kept by the execution service), annotated as `recent`.
    """
    threads = (
        Thread.objects.filter(owner=user)
        .annotate(recent=Greatest("updated_at", Coalesce("last_used_at", "updated_at")))
        .order_by("-recent", "-created_at")
    )
    return threads.filter(title__icontains=query) if query else threads


@require_safe
def home(request: HtmxHttpRequest) -> HttpResponse:
    """`/`: the thread list for a logged-in person; the landing page for anyone else."""
    if not request.user.is_authenticated:
        return landing_page(request)
    return thread_list(request)


@login_required
@require_safe
def thread_list(request: HtmxHttpRequest) -> HttpResponse:
    """The user's threads, most recently used first, filtered by `?q=`; the rows alone for htmx."""
    search = ThreadSearchForm(request.GET)
    query = search.cleaned_data["q"].strip() if search.is_valid() else ""
    context = {
        "threads": search_threads(request.user, query),
        "search": search,
        "query": query,
        "create_form": ThreadTitleForm(initial={"title": ""}),  # not the model default
    }
    return page_or_partial(
        request, "execution/thread_list.html", "execution/partials/thread_rows.html", context
    )


@login_required
@require_POST
def thread_create(request: HtmxHttpRequest) -> HttpResponseBase:
    """Create a thread and open its workspace (htmx: by a client-side redirect)."""
    form = ThreadTitleForm(request.POST)
    if not form.is_valid():
        context = {
            "threads": search_threads(request.user, ""),
            "search": ThreadSearchForm(),
            "query": "",
            "create_form": form,
        }
        return page_or_partial(
            request,
            "execution/thread_list.html",
            "execution/partials/thread_create_form.html",
            context,
            status=400,
        )
    thread = form.save(commit=False)
    thread.owner = request.user
    thread.save()
    url = reverse("workspace", args=[thread.id])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@login_required
def thread_rename(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """GET: the rename form. POST: rename; htmx gets the thread's row, a form post the list."""
    thread = owned_thread(request, thread_id)
    if request.method not in ("GET", "HEAD", "POST"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD, POST"})
    form = ThreadTitleForm(request.POST if request.method == "POST" else None, instance=thread)
    if request.method == "POST" and form.is_valid():
        form.save()
        if request.htmx:
            return render(request, "execution/partials/thread_row.html", {"thread": thread})
        return redirect("home")
    status = 400 if request.method == "POST" else 200
    return page_or_partial(
        request,
        "execution/thread_rename.html",
        "execution/partials/thread_rename_form.html",
        {"thread": thread, "form": form},
        status=status,
    )


@login_required
@require_POST
def thread_delete(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponseBase:
    """Delete a thread (its sandbox and files go; its runs stay in the audit).

    htmx gets an empty 200 that replaces the row; a plain form post goes back to the list.
    """
    thread = owned_thread(request, thread_id)
    ToolExecutor().delete_thread(thread=thread, user=request.user)  # type: ignore[arg-type]
    return HttpResponse("") if request.htmx else redirect("home")


# --- the workspace ----------------------------------------------------------------------------


# The time limits the page offers, in seconds; those above EXECUTION_MAX_TIMEOUT are left out
# and the default and the maximum are always offered.
TIMEOUT_CHOICES = (10, 30, 60, 120, 300, 600, 1800, 3600)


def timeout_choices() -> list[dict[str, Any]]:
    """The page's time-limit choices: each `seconds` and a label such as "30 s" or "5 min"."""
    ceiling = settings.EXECUTION_MAX_TIMEOUT
    seconds: set[float] = {s for s in TIMEOUT_CHOICES if s <= ceiling}
    seconds |= {settings.EXECUTION_DEFAULT_TIMEOUT, ceiling}
    return [
        {"seconds": s, "label": f"{s / 60:g} min" if s >= 60 else f"{s:g} s"}
        for s in sorted(seconds)
    ]


def workspace_context(request: HtmxHttpRequest, thread: Thread) -> dict[str, Any]:
    """Everything the workspace page renders: editor, files, packages and history."""
    last_run = Execution.objects.filter(thread=thread, user=page_caller(request).account).first()
    return {
        "thread": thread,
        "languages": EDITOR_LANGUAGES,
        "initial_language": last_run.language if last_run else Language.PYTHON,
        "initial_code": last_run.code if last_run else "",
        # A run still going when the page loads (a reload mid-run): the page catches it up.
        "active_run": last_run if last_run and not last_run.is_final else None,
        # Else the last run's output is where it was left.
        "last_output": run_output_context(request, thread, last_run, in_workspace=True)
        if last_run and last_run.is_final
        else None,
        "max_timeout": settings.EXECUTION_MAX_TIMEOUT,
        "timeout_choices": timeout_choices(),
        "default_timeout": settings.EXECUTION_DEFAULT_TIMEOUT,
        # sandboxd's Python kernel takes input(); E2B's cloud kernels take none.
        "input_available": get_backend().accepts_input,
        **files_context(thread),
        **packages_context(thread),
        **history_context(request, thread),
    }


@login_required
@require_safe
def workspace(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """The workspace of one thread: editor, live output, files, packages, history."""
    thread = owned_thread(request, thread_id)
    return page_or_partial(
        request,
        "execution/workspace.html",
        "execution/partials/workspace_body.html",
        workspace_context(request, thread),
    )


# --- files ------------------------------------------------------------------------------------


def files_context(thread: Thread, **forms: Any) -> dict[str, Any]:
    return {
        "thread": thread,
        "files": WorkspaceFile.objects.filter(thread=thread).order_by("path"),
        "new_file_form": forms.get("new_file_form") or NewFileForm(),
        "upload_form": forms.get("upload_form") or UploadFileForm(),
        "file_error": forms.get("file_error", ""),
    }


def render_files(
    request: HtmxHttpRequest,
    thread: Thread,
    *,
    status: int = 200,
    trigger: dict[str, Any] | None = None,
    **forms: Any,
) -> HttpResponse:
    """The files panel (whole page without htmx); `trigger` becomes an HX-Trigger event."""
    response = thread_panel(
        request,
        "execution/partials/files.html",
        files_context(thread, **forms),
        heading="Files of",
        status=status,
    )
    if trigger and request.htmx:
        response["HX-Trigger"] = json.dumps(trigger)
    return response


@login_required
@require_safe
def files(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """The thread's files, with the forms to add, upload, download and delete them."""
    return render_files(request, owned_thread(request, thread_id))


@login_required
@require_POST
def file_create(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """Create an empty file (refused when one exists at that path) and open it in the editor."""
    thread = owned_thread(request, thread_id)
    form = NewFileForm(request.POST)
    if form.is_valid():
        raw_path = form.cleaned_data["path"]
        executor, caller = ToolExecutor(), page_caller(request)
        try:
            try:
                path = validation.validate_workspace_path(
                    raw_path, suspicious_extensions=settings.EXECUTION_SUSPICIOUS_EXTENSIONS
                )
            except ToolError:
                # Refused by the policy: let write_file refuse it too, which audits it.
                executor.write_file(file_path=raw_path, content=b"", caller=caller, thread=thread)
                raise
            if WorkspaceFile.objects.filter(thread=thread, path=path).exists():
                form.add_error("path", f"{path} exists already; open it from the list.")
            else:
                row = executor.write_file(file_path=path, content=b"", caller=caller, thread=thread)
                trigger = {"workspace:file-open": {"path": row.path}}
                return render_files(request, thread, status=201, trigger=trigger)
        except ToolError as error:
            add_tool_error(form, error, "path")
            return render_files(request, thread, status=error.status, new_file_form=form)
    return render_files(request, thread, status=400, new_file_form=form)


@login_required
@require_POST
def file_save(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """Save the editor's text to a path (created or replaced); answers the files panel."""
    thread = owned_thread(request, thread_id)
    form = SaveFileForm(request.POST)
    if not form.is_valid():
        return render_files(request, thread, status=400, file_error=_first_error(form))
    try:
        row = ToolExecutor().write_file(
            file_path=form.cleaned_data["path"],
            content=form.cleaned_data["content"],
            caller=page_caller(request),
            thread=thread,
        )
    except ToolError as error:
        return render_files(
            request, thread, status=error.status, file_error=f"{error.message} ({error.code})"
        )
    trigger = {"workspace:file-saved": {"path": row.path, "size": row.size}}
    return render_files(request, thread, trigger=trigger)


@login_required
@require_POST
def file_upload(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """Store an uploaded file at its own name or the path given."""
    thread = owned_thread(request, thread_id)
    form = UploadFileForm(request.POST, request.FILES)
    if not form.is_valid():
        return render_files(request, thread, status=400, upload_form=form)
    upload = form.cleaned_data["file"]
    path = form.cleaned_data["path"] or upload.name
    try:
        validation.validate_file_size(upload.size, max_bytes=settings.EXECUTION_MAX_FILE_BYTES)
        ToolExecutor().write_file(
            file_path=path, content=upload.read(), caller=page_caller(request), thread=thread
        )
    except ToolError as error:
        add_tool_error(form, error)
        return render_files(request, thread, status=error.status, upload_form=form)
    return render_files(request, thread, status=201)


@login_required
@require_POST
def file_delete(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """Delete a workspace file (database and sandbox)."""
    thread = owned_thread(request, thread_id)
    form = FilePathForm(request.POST)
    if not form.is_valid():
        return render_files(request, thread, status=400, file_error=_first_error(form))
    try:
        ToolExecutor().delete_file(
            file_path=form.cleaned_data["path"], caller=page_caller(request), thread=thread
        )
    except ToolError as error:
        return render_files(
            request, thread, status=error.status, file_error=f"{error.message} ({error.code})"
        )
    return render_files(request, thread)


def _first_error(form: Any) -> str:
    for field, messages in form.errors.items():
        name = "" if field == "__all__" else f"{field}: "
        return f"{name}{messages[0]}"
    return ""


# --- packages ---------------------------------------------------------------------------------


def packages_context(thread: Thread, form: PackageInstallForm | None = None) -> dict[str, Any]:
    installs = list(PackageInstall.objects.filter(thread=thread).order_by("-created_at")[:50])
    active = (PackageInstall.Status.QUEUED, PackageInstall.Status.RUNNING)
    return {
        "thread": thread,
        "installs": installs,
        "installing": any(install.status in active for install in installs),
        "package_form": form or PackageInstallForm(),
    }


def render_packages(
    request: HtmxHttpRequest,
    thread: Thread,
    *,
    status: int = 200,
    form: PackageInstallForm | None = None,
    expect_after: int | None = None,
) -> HttpResponse:
    context = packages_context(thread, form)
    # Right after an install is accepted its row may not exist yet (the install starts in
    # the background): keep polling, as `?after=<known>`, until it shows up and finishes.
    context["installing"] = context["installing"] or expect_after is not None
    context["expect_after"] = expect_after
    # The list's own poll (`?part=list`) gets the list alone: the form is never re-rendered
    # under a person typing in it.
    partial = (
        "execution/partials/install_list.html"
        if request.GET.get("part") == "list"
        else "execution/partials/packages.html"
    )
    return thread_panel(request, partial, context, heading="Packages of", status=status)


@login_required
@require_safe
def packages(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """The thread's installs, newest first, with their status and log.

    `?after=<n>`: the client knows of n installs and expects one more, so the panel keeps
    polling while there are no more than n.
    """
    thread = owned_thread(request, thread_id)
    try:
        known: int | None = int(request.GET.get("after", ""))
    except ValueError:
        known = None
    if known is not None and PackageInstall.objects.filter(thread=thread).count() > known:
        known = None  # it showed up: from now on its own status says whether to poll
    return render_packages(request, thread, expect_after=known)


@login_required
@require_POST
def package_install(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """Start installing packages (in the background); the panel polls until it is done.

    A request the policy refuses is refused here, at once, with its message; it is still
    handed to the ToolExecutor so the refusal is stored and audited like any other.
    """
    thread = owned_thread(request, thread_id)
    form = PackageInstallForm(request.POST)
    if not form.is_valid():
        return render_packages(request, thread, status=400, form=form)
    language = form.cleaned_data["language"]
    specs = form.cleaned_data["packages"]
    executor = ToolExecutor()
    caller = page_caller(request)
    throttled = install_throttled(request)
    if throttled is not None:
        add_tool_error(form, throttled, "packages")
        response = render_packages(request, thread, status=throttled.status, form=form)
        for name, value in throttled.headers.items():
            response[name] = value
        return response
    try:
        validation.validate_package_specs(
            specs, language=language, deny_list=settings.PACKAGE_DENY_LIST
        )
    except ToolError:
        try:
            executor.install_packages(
                packages=specs, language=language, caller=caller, thread=thread
            )
        except ToolError as error:
            add_tool_error(form, error, "packages")
            return render_packages(request, thread, status=error.status, form=form)
    known = PackageInstall.objects.filter(thread=thread).count()
    # The service portal's background work, like a run started without waiting.
    service_portal().start_background(
        functools.partial(
            _install_in_background,
            packages=specs,
            language=language,
            caller=caller,
            thread=thread,
        ),
        name=f"install-{thread.id.hex[:8]}",
    )
    return render_packages(request, thread, status=202, expect_after=known)


def install_throttled(request: HtmxHttpRequest) -> ToolError | None:
    """The audited 429 ToolError when the user reached INSTALL_THROTTLE_RATE, else None.

    The API's own throttle, with the same counter: installs from the page and from the API
    share one limit per user.
    """
    try:
        check_rate(throttle_class=InstallRateThrottle, caller=page_caller(request))
    except ToolError as error:
        return error
    return None


def _install_in_background(
    *, packages: list[str], language: str, caller: Caller, thread: Thread
) -> None:
    """Run one install to its end in a background worker; the PackageInstall row is its record
    (a sandbox failure is stored there as `failed` with the reason)."""
    close_old_connections()
    try:
        ToolExecutor().install_packages(
            packages=packages, language=language, caller=caller, thread=thread
        )
    except ToolError as error:
        logger.info("install in thread %s refused: %s", thread, error.code)
    except Exception:
        logger.exception("install in thread %s failed", thread)
    finally:
        connection.close()


# --- history ----------------------------------------------------------------------------------


def present_result(result: dict[str, Any]) -> dict[str, Any]:
    """How one rich result is shown: the richest safe form it has.

    Images become `data:` URLs for an `<img>` (an SVG as an image runs no script); HTML goes
    into a sandboxed `srcdoc` iframe (no allow-scripts: none of its script runs); otherwise
    markdown, JSON or the plain text, as text.
    """
    if result.get("png"):
        return {"kind": "image", "src": f"data:image/png;base64,{result['png']}"}
    if result.get("jpeg"):
        return {"kind": "image", "src": f"data:image/jpeg;base64,{result['jpeg']}"}
    if result.get("svg"):
        return {"kind": "image", "src": "data:image/svg+xml;charset=utf-8," + quote(result["svg"])}
    if result.get("html"):
        return {"kind": "html", "html": result["html"]}
    for name in ("markdown", "latex", "text"):
        if result.get(name):
            return {"kind": "text", "text": str(result[name])}
    if result.get("json") is not None:
        return {"kind": "text", "text": json.dumps(result["json"], indent=2)}
    return {"kind": "text", "text": ""}


def present_error(error: RunError | None) -> dict[str, str] | None:
    """A run's error as name, message and traceback (a refusal has code and message)."""
    if not error:
        return None
    if "name" in error:
        return {
            "name": str(error.get("name") or "Error"),
            "value": str(error.get("value") or ""),
            "traceback": strip_ansi(str(error.get("traceback") or "")),
            "code": str(error.get("code") or ""),
        }
    return {
        "name": "Refused",
        "value": str(error.get("message") or ""),
        "traceback": "",
        "code": str(error.get("code") or ""),
    }


def history_context(request: HtmxHttpRequest, thread: Thread) -> dict[str, Any]:
    runs = Execution.objects.filter(thread=thread, user=page_caller(request).account).order_by(
        "-created_at"
    )
    return {"thread": thread, "runs": runs[:HISTORY_LENGTH]}


@login_required
@require_safe
def history(request: HtmxHttpRequest, thread_id: uuid.UUID) -> HttpResponse:
    """The thread's runs, newest first, with status, language and duration."""
    thread = owned_thread(request, thread_id)
    return thread_panel(
        request,
        "execution/partials/history.html",
        history_context(request, thread),
        heading="History of",
    )


def run_output_context(
    request: HttpRequest, thread: Thread, execution: Execution, *, in_workspace: bool
) -> dict[str, Any]:
    """What templates/execution/partials/run_output.html renders for one stored run."""
    pieces = execution.ordered_output()
    return {
        "thread": thread,
        "run": execution,
        # In the order produced: server-rendered for pages without script, and as JSON
        # (`output_pieces`) for output.js, which draws them as it draws live output.
        "pieces": [
            {"kind": piece.kind, "text": piece.text, "shown": present_result(piece.result)}
            if piece.result is not None
            else {"kind": piece.kind, "text": piece.text}
            for piece in pieces
            if piece.kind != "error"
        ],
        "output_pieces": [
            {
                "type": piece.kind,
                "text": piece.text,
                # A large result by reference, as the websocket sends it.
                "result": result_reference(execution.id, piece.position, piece.result)
                if piece.result is not None
                else None,
            }
            for piece in pieces
            if piece.kind != "error"
        ],
        "output_json_id": f"output-{execution.id}",
        "run_error": present_error(execution.error_data),
        "skipped_files": execution.details_data.get("file_sync", {}).get("skipped", []),
        # Inside a workspace's output pane the editor is at hand.
        "in_workspace": in_workspace,
    }


@login_required
@require_safe
def run_detail(
    request: HtmxHttpRequest, thread_id: uuid.UUID, execution_id: uuid.UUID
) -> HttpResponse:
    """One run: its code and its stored output (stdout, stderr, results, error, status)."""
    thread = owned_thread(request, thread_id)
    execution = owned_execution(request, thread, execution_id)
    return thread_panel(
        request,
        "execution/partials/run_output.html",
        run_output_context(request, thread, execution, in_workspace=bool(request.htmx)),
        heading="Run in",
    )
