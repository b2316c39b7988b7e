"""The admin audit view: what ran, who ran it, what came out, and what was refused.

Staff (any active `is_staff` account, no model permission needed) may READ every audit list
and detail page. Executions, security events, package installs and threads are read-only for
everybody, superusers included: they are the audit trail, and editing or deleting a row
would falsify it. Agents are editable by accounts with the usual change permission.

Output is untrusted (user code wrote it): every value is escaped, HTML results are shown as
source, and images are shown only as `data:` URIs in `<img>` after their bytes were checked,
so nothing a run printed can execute script in an administrator's browser.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from execution.models import Agent, Execution, PackageInstall, SecurityEvent, Thread, WorkspaceFile
from execution.terminal import strip_ansi

# How many rows of each kind a thread's page shows inline; the rest are one link away.
INLINE_ROWS = 50

# Result formats shown as pictures, with the bytes each must start with to be believed.
_IMAGE_SIGNATURES = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpeg": (b"\xff\xd8\xff",),
    "gif": (b"GIF87a", b"GIF89a"),
}
# Result formats shown as (escaped) text, in this order.
_TEXT_FORMATS = ("text", "json", "html", "markdown", "latex", "javascript")
# A spreadsheet treats a cell starting with one of these as a formula (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _is_active_staff(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_staff)


def _pre(text: str, css_class: str = "") -> SafeString:
    if not text:
        return format_html('<span class="audit-empty">{}</span>', "(empty)")
    return format_html('<pre class="audit-block {}">{}</pre>', css_class, text)


def _json_pre(value: Any) -> SafeString:
    return _pre(json.dumps(value, indent=2, ensure_ascii=False, default=str), "audit-json")


def render_image(fmt: str, data: Any) -> SafeString | None:
    """Return an <img> for base64 image data of format `fmt`, or None if it is not one.

    PNG/JPEG/GIF must decode and start with their format's signature. SVG is shown only
    through <img> (where browsers never run its scripts), never inlined into the page.
    """
    if not isinstance(data, str):
        return None
    if fmt == "svg":
        encoded = base64.b64encode(data.encode("utf-8")).decode("ascii")
        return format_html(
            '<img class="audit-image" alt="SVG result" src="data:image/svg+xml;base64,{}">',
            encoded,
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_IMAGE_SIGNATURES[fmt]):
        return None
    encoded = base64.b64encode(raw).decode("ascii")
    return format_html(
        '<img class="audit-image" alt="{} result" src="data:image/{};base64,{}">',
        fmt.upper(),
        fmt,
        encoded,
    )


def render_result(result: Any) -> SafeString:
    """Render one rich result (a dict of format -> data) safely, images first."""
    if not isinstance(result, dict):
        return _json_pre(result)
    parts: list[SafeString] = []
    for fmt in ("png", "jpeg", "gif", "svg"):
        if fmt in result:
            image = render_image(fmt, result[fmt])
            parts.append(image if image is not None else _pre(f"[{fmt}: not a valid image]"))
    for fmt in _TEXT_FORMATS:
        if fmt in result:
            value = result[fmt]
            text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
            parts.append(format_html("<div><small>{}</small>{}</div>", fmt, _pre(text)))
    if not parts:
        parts.append(_json_pre(result))
    return format_html_join("", "{}", ((part,) for part in parts))


def csv_cell(value: Any) -> str:
    """Return a CSV cell for value; text that a spreadsheet would run as a formula is
    prefixed with a quote (the only change made to the exported data)."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, default=str)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


class StaffReadOnlyAdmin(admin.ModelAdmin):
    """An audit list: readable by every active staff member, writable by nobody."""

    # The audit tables only grow: skip the COUNT(*) of the whole table on filtered pages.
    show_full_result_count = False

    class Media:
        css = {"all": ["css/admin-audit.css"]}

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_active_staff(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_active_staff(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecentRowsFormSet(BaseInlineFormSet):
    """An inline formset showing only the newest INLINE_ROWS rows (the model's ordering)."""

    def get_queryset(self) -> QuerySet:
        if not hasattr(self, "_recent_rows"):
            self._recent_rows = super().get_queryset()[:INLINE_ROWS]
        return self._recent_rows


class StaffReadOnlyInline(admin.TabularInline):
    """A read-only inline of an audit page."""

    formset = RecentRowsFormSet
    extra = 0
    can_delete = False
    show_change_link = True

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_active_staff(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.display(description="duration", ordering="duration_ms")
def duration(execution: Execution) -> str:
    if execution.duration_ms is None:
        return "-"
    if execution.duration_ms < 1000:
        return f"{execution.duration_ms} ms"
    return f"{execution.duration_ms / 1000:.1f} s"


@admin.display(description="exit", ordering="exit_code")
def exit_code(execution: Execution) -> str:
    return "-" if execution.exit_code is None else str(execution.exit_code)


CSV_COLUMNS = (
    "id",
    "created_at",
    "user",
    "thread_id",
    "agent",
    "language",
    "source",
    "status",
    "client_ip",
    "duration_ms",
    "exit_code",
    "truncated",
    "code",
    "stdout",
    "stderr",
    "error",
)


@admin.register(Execution)
class ExecutionAdmin(StaffReadOnlyAdmin):
    list_display = [
        "created_at",
        "user",
        "thread",
        "agent",
        "language",
        "status",
        duration,
        exit_code,
    ]
    list_display_links = ["created_at"]
    list_filter = [
        "status",
        "language",
        ("user", admin.RelatedOnlyFieldListFilter),
        ("agent", admin.RelatedOnlyFieldListFilter),
        "source",
        "truncated",
        "created_at",
    ]
    date_hierarchy = "created_at"
    search_fields = ["code", "stdout", "stderr"]
    list_select_related = ["user", "thread", "agent"]
    list_per_page = 50
    actions = ["export_csv"]
    fieldsets = [
        (
            "Run",
            {
                "fields": [
                    "id",
                    "created_at",
                    "user",
                    "thread",
                    "agent",
                    "source",
                    "client_ip",
                    "language",
                    "status",
                ]
            },
        ),
        (
            "Timing and outcome",
            {
                "fields": [
                    "started_at",
                    "finished_at",
                    duration,  # type: ignore[list-item]
                    "timeout_seconds",
                    exit_code,  # type: ignore[list-item]
                    "truncated",
                    "cancel_requested",
                ]
            },
        ),
        ("Code", {"fields": ["code_block"]}),
        ("Output", {"fields": ["stdout_block", "stderr_block"]}),
        ("Results", {"fields": ["results_block"]}),
        ("Error", {"fields": ["error_block"]}),
        ("Details", {"fields": ["details_block", "last_seq"], "classes": ["collapse"]}),
    ]
    # Every field shown is read-only: the audit trail is never edited.
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]  # type: ignore[misc]

    @admin.display(description="code")
    def code_block(self, execution: Execution) -> SafeString:
        return _pre(execution.code, "audit-code")

    @admin.display(description="stdout")
    def stdout_block(self, execution: Execution) -> SafeString:
        return _pre(execution.stdout, "audit-stdout")

    @admin.display(description="stderr")
    def stderr_block(self, execution: Execution) -> SafeString:
        return _pre(execution.stderr, "audit-stderr")

    @admin.display(description="results")
    def results_block(self, execution: Execution) -> SafeString:
        results = execution.results
        if not results:
            return _pre("")
        if not isinstance(results, list):
            return _json_pre(results)
        return format_html_join(
            "", '<div class="audit-result">{}</div>', ((render_result(r),) for r in results)
        )

    @admin.display(description="error")
    def error_block(self, execution: Execution) -> SafeString:
        error = execution.error_data  # parsed in one place: models.parse_run_error
        if not error:
            return _pre("")
        # A code error: {"name", "value", "traceback"}; a rejection: {"code", "message"}.
        heading = ": ".join(
            error[key] for key in ("name", "value", "code", "message") if error.get(key)
        )
        traceback = error.get("traceback", "")
        if isinstance(traceback, list):
            traceback = "\n".join(str(line) for line in traceback)
        return format_html("<strong>{}</strong>{}", heading, _pre(strip_ansi(str(traceback))))

    @admin.display(description="details")
    def details_block(self, execution: Execution) -> SafeString:
        return _json_pre(execution.details)

    @admin.action(description="Export selected executions as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Execution]) -> HttpResponse:
        """Return the selected executions as a CSV download, oldest first."""
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="executions.csv"'
        writer = csv.writer(response)
        writer.writerow(CSV_COLUMNS)
        rows = queryset.select_related("user", "agent").order_by("created_at")
        writer.writerows(self._csv_row(execution) for execution in rows.iterator())
        return response

    @staticmethod
    def _csv_row(execution: Execution) -> Iterable[str]:
        return [
            csv_cell(value)
            for value in (
                execution.id,
                execution.created_at.isoformat(),
                execution.user.get_username(),
                execution.thread_id,
                execution.agent.name if execution.agent else None,
                execution.language,
                execution.source,
                execution.status,
                execution.client_ip,
                execution.duration_ms,
                execution.exit_code,
                execution.truncated,
                execution.code,
                execution.stdout,
                execution.stderr,
                execution.error,
            )
        ]


@admin.register(SecurityEvent)
class SecurityEventAdmin(StaffReadOnlyAdmin):
    list_display = ["created_at", "kind", "code", "user", "agent", "thread", "source", "client_ip"]
    list_display_links = ["created_at"]
    list_filter = [
        "kind",
        "source",
        ("user", admin.RelatedOnlyFieldListFilter),
        ("agent", admin.RelatedOnlyFieldListFilter),
        "created_at",
    ]
    date_hierarchy = "created_at"
    search_fields = ["code", "message"]
    list_select_related = ["user", "agent", "thread"]
    fields = [
        "created_at",
        "kind",
        "code",
        "message",
        "user",
        "agent",
        "thread",
        "execution",
        "source",
        "client_ip",
        "details_block",
    ]
    readonly_fields = fields  # type: ignore[assignment]

    @admin.display(description="details")
    def details_block(self, event: SecurityEvent) -> SafeString:
        return _json_pre(event.details)


@admin.register(PackageInstall)
class PackageInstallAdmin(StaffReadOnlyAdmin):
    list_display = ["created_at", "user", "thread", "agent", "language", "package_names", "status"]
    list_display_links = ["created_at"]
    list_filter = ["status", "language", ("user", admin.RelatedOnlyFieldListFilter), "created_at"]
    search_fields = ["log", "user__username"]
    list_select_related = ["user", "thread", "agent"]
    fields = [
        "created_at",
        "finished_at",
        "user",
        "thread",
        "agent",
        "language",
        "package_names",
        "status",
        "log_block",
    ]
    readonly_fields = fields  # type: ignore[assignment]

    @admin.display(description="packages")
    def package_names(self, install: PackageInstall) -> str:
        packages = install.packages
        return " ".join(map(str, packages)) if isinstance(packages, list) else str(packages)

    @admin.display(description="log")
    def log_block(self, install: PackageInstall) -> SafeString:
        return _pre(install.log)


# django-stubs type `fields` and `readonly_fields` as names only; Django also takes the
# display callables used here, and `readonly_fields = fields` reuses one list on purpose.
# The ignores below say exactly that and nothing else.


class ExecutionInline(StaffReadOnlyInline):
    model = Execution
    fields = ["created_at", "user", "agent", "language", "status", duration, exit_code]  # type: ignore[list-item]
    readonly_fields = fields  # type: ignore[assignment]
    verbose_name_plural = f"executions (newest {INLINE_ROWS})"


class WorkspaceFileInline(StaffReadOnlyInline):
    model = WorkspaceFile
    fields = ["path", "size", "sha256", "written_by", "updated_at"]
    readonly_fields = fields  # type: ignore[assignment]
    show_change_link = False  # files have no admin page of their own
    verbose_name_plural = f"files (first {INLINE_ROWS} by path)"


class PackageInstallInline(StaffReadOnlyInline):
    model = PackageInstall
    fields = ["created_at", "language", "packages", "status"]
    readonly_fields = fields  # type: ignore[assignment]
    verbose_name_plural = f"package installs (newest {INLINE_ROWS})"


@admin.register(Thread)
class ThreadAdmin(StaffReadOnlyAdmin):
    list_display = ["title", "owner", "created_at", "updated_at", "last_used_at", "sandbox_id"]
    list_filter = [("owner", admin.RelatedOnlyFieldListFilter), "created_at"]
    search_fields = ["title", "owner__username"]
    list_select_related = ["owner"]
    fields = [
        "id",
        "title",
        "owner",
        "created_at",
        "updated_at",
        "last_used_at",
        "sandbox_id",
        "context_ids",
        "all_executions",
    ]
    readonly_fields = fields  # type: ignore[assignment]
    inlines = [ExecutionInline, WorkspaceFileInline, PackageInstallInline]

    @admin.display(description="history")
    def all_executions(self, thread: Thread) -> SafeString:
        url = reverse("admin:execution_execution_changelist")
        return format_html(
            '<a href="{}?thread__id__exact={}">All {} executions of this thread</a>',
            url,
            thread.pk,
            thread.executions.count(),
        )


class AgentAdminForm(forms.ModelForm):
    """Agent form with allowed_tools as checkboxes of the known tool names."""

    allowed_tools = forms.MultipleChoiceField(
        choices=[(name, name) for name in Agent.TOOL_NAMES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="The tools this agent may call; every other tool call is refused.",
    )

    class Meta:
        model = Agent
        fields = ["owner", "name", "description", "allowed_tools", "is_active"]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    """Agents: staff may look; changing one needs the usual change permission."""

    form = AgentAdminForm
    list_display = ["name", "owner", "is_active", "tools", "created_at"]
    list_filter = ["is_active", ("owner", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "owner__username", "description"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return _is_active_staff(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_active_staff(request)

    @admin.display(description="allowed tools")
    def tools(self, agent: Agent) -> str:
        tools = agent.allowed_tools
        return ", ".join(map(str, tools)) if isinstance(tools, list) and tools else "-"
