"""REST endpoints of the execution service: thin views over the ToolExecutor.

Every object is reached through the selectors (execution/selectors.py): another user's
object is a 404, exactly like one that does not exist, and the attempt is audited there.
Views parse and shape; the services decide.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import uuid
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import FileResponse, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from execution.api.limits import refuse_oversized_body
from execution.api.parsers import BoundedJSONParser
from execution.api.serializers import (
    ErrorSerializer,
    ExecuteRequestSerializer,
    ExecutionSerializer,
    ExecutionStartedSerializer,
    InstallPackagesRequestSerializer,
    PackageInstallSerializer,
    ReadFileRequestSerializer,
    ReadFileResponseSerializer,
    ThreadSerializer,
    UploadFileSerializer,
    WorkspaceFileSerializer,
    WriteFileRequestSerializer,
    read_file_content,
    websocket_url,
    write_file_content,
)
from execution.api.throttles import ExecuteRateThrottle, InstallRateThrottle
from execution.caller import Caller
from execution.models import (
    Agent,
    Execution,
    Language,
    PackageInstall,
    Source,
    Thread,
    WorkspaceFile,
)
from execution.selectors import (
    agent_get_owned,
    execution_get_owned,
    thread_get_owned,
    thread_get_owned_or_new,
)
from execution.services.errors import ToolError, execution_failure, not_found
from execution.services.tool_executor import ToolExecutor, record_security_event
from execution.services.validation import validate_file_size
from execution.stream import BINARY_FORMATS, RESULT_MIME_TYPES

# --- access -----------------------------------------------------------------------------------


def api_caller(request: Request, agent: Agent | None = None) -> Caller:
    """The caller of an API request: source `agent` when an agent acts, else `api`."""
    return Caller.from_request(request, source=Source.AGENT if agent else Source.API, agent=agent)


def owned_thread(request: Request, thread_id: Any) -> Thread:
    """The user's thread with that id; ToolError 404 `thread_not_found` otherwise."""
    return thread_get_owned(caller=api_caller(request), thread_id=thread_id)


def owned_agent(request: Request, agent_id: Any) -> Agent | None:
    """The user's agent with that id (None when no id); ToolError 404 otherwise."""
    if agent_id is None:
        return None
    return agent_get_owned(caller=api_caller(request), agent_id=agent_id)


def _thread_or_new(request: Request, thread_id: Any) -> Thread:
    return thread_get_owned_or_new(caller=api_caller(request), thread_id=thread_id)


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request or refused by policy."),
    401: OpenApiResponse(ErrorSerializer, description="No or bad credentials."),
    403: OpenApiResponse(ErrorSerializer, description="The agent may not use this tool."),
    404: OpenApiResponse(ErrorSerializer, description="No such object of yours."),
    429: OpenApiResponse(
        ErrorSerializer, description="Rate or concurrency limit; see Retry-After."
    ),
    503: OpenApiResponse(ErrorSerializer, description="The sandbox service is unavailable."),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes}


# --- the seed's tool endpoints ----------------------------------------------------------------


class ExecuteView(APIView):
    """Run code in a thread's sandbox."""

    throttle_classes = [ExecuteRateThrottle]

    @extend_schema(
        operation_id="code_execute",
        request=ExecuteRequestSerializer,
        responses={
            201: ExecutionSerializer,
            202: ExecutionStartedSerializer,
            409: OpenApiResponse(ErrorSerializer, description="The thread is being deleted."),
            413: OpenApiResponse(ErrorSerializer, description="Code over the size limit."),
            **errors(400, 401, 403, 404, 429, 503),
        },
        description="Runs code. With wait=true (default) answers 201 with the finished "
        "execution (a code error is status `failed`, not an HTTP error; a sandbox failure is "
        "a 503); with wait=false answers 202 at once with the websocket URL to watch.",
    )
    def post(self, request: Request) -> Response:
        params = ExecuteRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        thread = owned_thread(request, data["thread_id"]) if data.get("thread_id") else None
        agent = owned_agent(request, data.get("agent_id"))
        executor = ToolExecutor()
        kwargs = {
            "code": data["code"],
            "language": data["language"],
            "caller": api_caller(request, agent),
            "thread": thread,
            "timeout": data.get("timeout"),
        }
        if not data["wait"]:
            execution = executor.start_execution(**kwargs)
            body = {
                "id": execution.id,
                "thread_id": execution.thread_id,
                "status": execution.status,
                "url": ExecutionSerializer(context={"request": request}).get_url(execution),
                "websocket_url": websocket_url(request, execution.id),
            }
            return Response(ExecutionStartedSerializer(body).data, status=status.HTTP_202_ACCEPTED)
        execution = executor.execute_code(**kwargs)
        if execution.status == Execution.Status.ERROR:
            raise execution_failure(execution)
        serializer = ExecutionSerializer(execution, context={"request": request})
        return Response(serializer.data, status=status.HTTP_201_CREATED)


class WriteFileView(APIView):
    """Write a file into a thread's workspace."""

    @extend_schema(
        operation_id="code_write_file",
        request=WriteFileRequestSerializer,
        responses={
            201: WorkspaceFileSerializer,
            413: OpenApiResponse(ErrorSerializer, description="File over the size limit."),
            **errors(400, 401, 403, 404, 503),
        },
    )
    def post(self, request: Request) -> Response:
        refuse_oversized_body(request, caller=api_caller(request))
        params = WriteFileRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        content = write_file_content(data)
        agent = owned_agent(request, data.get("agent_id"))
        thread = _thread_or_new(request, data.get("thread_id"))
        row = ToolExecutor().write_file(
            file_path=data["path"],
            content=content,
            caller=api_caller(request, agent),
            thread=thread,
        )
        return Response(WorkspaceFileSerializer(row).data, status=status.HTTP_201_CREATED)


class ReadFileView(APIView):
    """Read a file of a thread's workspace."""

    @extend_schema(
        operation_id="code_read_file",
        request=ReadFileRequestSerializer,
        responses={200: ReadFileResponseSerializer, **errors(400, 401, 403, 404, 503)},
    )
    def post(self, request: Request) -> Response:
        params = ReadFileRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        thread = owned_thread(request, data["thread_id"])
        agent = owned_agent(request, data.get("agent_id"))
        path, content = ToolExecutor().read_file(
            file_path=data["path"], caller=api_caller(request, agent), thread=thread
        )
        encoding, text = read_file_content(content, data.get("encoding"))
        body = {
            "thread_id": thread.id, "path": path, "size": len(content),
            "encoding": encoding, "content": text,
        }  # fmt: skip
        return Response(ReadFileResponseSerializer(body).data)


class InstallPackagesView(APIView):
    """Install pip or npm packages in a thread's sandbox."""

    throttle_classes = [InstallRateThrottle]

    @extend_schema(
        operation_id="code_install_packages",
        request=InstallPackagesRequestSerializer,
        responses={201: PackageInstallSerializer, **errors(400, 401, 403, 404, 429, 503)},
        description="Installs packages and answers 201 with the install: status `succeeded` "
        "or `failed` (e.g. no such package), with the installer's log.",
    )
    def post(self, request: Request) -> Response:
        params = InstallPackagesRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        agent = owned_agent(request, data.get("agent_id"))
        thread = _thread_or_new(request, data.get("thread_id"))
        install = ToolExecutor().install_packages(
            packages=data["packages"],
            language=data["language"],
            caller=api_caller(request, agent),
            thread=thread,
        )
        return Response(PackageInstallSerializer(install).data, status=status.HTTP_201_CREATED)


# --- threads ----------------------------------------------------------------------------------


@extend_schema_view(
    # 404 too: a page number past the end.
    get=extend_schema(responses={200: ThreadSerializer, **errors(401, 404)}),
    post=extend_schema(responses={201: ThreadSerializer, **errors(400, 401)}),
)
class ThreadListView(generics.ListCreateAPIView):
    """List your threads (newest first) or create one."""

    serializer_class = ThreadSerializer

    def get_queryset(self) -> QuerySet[Thread]:
        return Thread.objects.filter(owner=api_caller(self.request).account).order_by(
            "-updated_at", "-id"
        )

    def perform_create(self, serializer: BaseSerializer[Any]) -> None:
        serializer.save(owner=api_caller(self.request).account)


@extend_schema_view(
    get=extend_schema(responses={200: ThreadSerializer, **errors(401, 404)}),
    patch=extend_schema(responses={200: ThreadSerializer, **errors(400, 401, 404)}),
    delete=extend_schema(responses={204: None, **errors(401, 404)}),
)
class ThreadDetailView(generics.RetrieveUpdateDestroyAPIView):
    """One of your threads: read, rename, delete (which kills its sandbox)."""

    serializer_class = ThreadSerializer
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_object(self) -> Thread:
        return owned_thread(self.request, self.kwargs["thread_id"])

    def perform_destroy(self, instance: Thread) -> None:
        ToolExecutor().delete_thread(thread=instance, user=api_caller(self.request).account)


# --- executions -------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=[s.value for s in Execution.Status]),
            OpenApiParameter("language", str, enum=[lang.value for lang in Language]),
        ],
        responses={200: ExecutionSerializer(many=True), **errors(400, 401, 404)},
    )
)
class ThreadExecutionListView(generics.ListAPIView):
    """A thread's executions, newest first, paged; filter by status and language."""

    serializer_class = ExecutionSerializer

    def get_queryset(self) -> QuerySet[Execution]:
        thread = owned_thread(self.request, self.kwargs["thread_id"])
        queryset = Execution.objects.filter(thread=thread, user=api_caller(self.request).account)
        status_filter = self.request.query_params.get("status")
        if status_filter is not None:
            if status_filter not in Execution.Status.values:
                raise ToolError(
                    "invalid_filter", f"Unknown status {status_filter!r}.", 400,
                    {"allowed": Execution.Status.values},
                )  # fmt: skip
            queryset = queryset.filter(status=status_filter)
        language = self.request.query_params.get("language")
        if language is not None:
            if language not in Language.values:
                raise ToolError(
                    "invalid_filter", f"Unknown language {language!r}.", 400,
                    {"allowed": Language.values},
                )  # fmt: skip
            queryset = queryset.filter(language=language)
        return queryset.order_by("-created_at", "-id")


@extend_schema_view(get=extend_schema(responses={200: ExecutionSerializer, **errors(401, 404)}))
class ExecutionDetailView(generics.RetrieveAPIView):
    """One of your executions."""

    serializer_class = ExecutionSerializer

    def get_object(self) -> Execution:
        return execution_get_owned(
            caller=api_caller(self.request), execution_id=self.kwargs["execution_id"]
        )


class ExecutionResultView(APIView):
    """One rich result of one of your executions: its JSON, or with `?part=` one format's
    content (base64 formats such as png served decoded). Websocket frames refer here for a
    result too large to travel inline (execution/stream.py). Not `?format=`: DRF reserves
    that name for choosing a renderer."""

    @extend_schema(
        operation_id="execution_result",
        parameters=[OpenApiParameter("part", str, description="e.g. png, svg, html, text")],
        responses={200: OpenApiTypes.OBJECT, **errors(401, 404)},
    )
    def get(self, request: Request, execution_id: uuid.UUID, index: int) -> HttpResponse:
        execution = execution_get_owned(caller=api_caller(request), execution_id=execution_id)
        results = execution.results or []
        if index >= len(results):
            raise not_found("result")
        result = results[index]
        wanted = request.query_params.get("part")
        if not wanted:
            return Response(result)
        value = result.get(wanted)
        if value is None or wanted not in RESULT_MIME_TYPES:
            raise not_found("result")
        if wanted in BINARY_FORMATS:
            # The value is whatever the run displayed under that MIME type: code can display
            # text that is not base64, which is then no such picture, not a server error.
            try:
                content: bytes = base64.b64decode(value, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise not_found("result") from None
        elif isinstance(value, str):
            content = value.encode("utf-8")
        else:
            content = json.dumps(value).encode("utf-8")
        response = HttpResponse(content, content_type=RESULT_MIME_TYPES[wanted])
        # Never rendered as a page of this origin: HTML or SVG from user code stays inert.
        response["Content-Security-Policy"] = "default-src 'none'; img-src data:; sandbox"
        response["X-Content-Type-Options"] = "nosniff"
        return response


class ExecutionCancelView(APIView):
    """Cancel one of your queued or running executions."""

    @extend_schema(
        operation_id="execution_cancel",
        request=None,
        responses={
            200: ExecutionSerializer,
            409: OpenApiResponse(ErrorSerializer, description="It already finished."),
            **errors(401, 404),
        },
    )
    def post(self, request: Request, execution_id: uuid.UUID) -> Response:
        execution = execution_get_owned(caller=api_caller(request), execution_id=execution_id)
        execution = ToolExecutor().cancel_execution(
            execution_id=execution.id, user=api_caller(request).account
        )
        return Response(ExecutionSerializer(execution, context={"request": request}).data)


# --- files ------------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(responses={200: WorkspaceFileSerializer(many=True), **errors(401, 404)})
)
class ThreadFileListView(generics.ListAPIView):
    """A thread's files (list) and uploads (multipart: `file`, optional `path`)."""

    serializer_class = WorkspaceFileSerializer
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    def get_queryset(self) -> QuerySet[WorkspaceFile]:
        thread = owned_thread(self.request, self.kwargs["thread_id"])
        return WorkspaceFile.objects.filter(thread=thread).order_by("path")

    @extend_schema(
        operation_id="thread_file_upload",
        request={"multipart/form-data": UploadFileSerializer},
        responses={
            201: WorkspaceFileSerializer,
            413: OpenApiResponse(ErrorSerializer, description="File over the size limit."),
            **errors(400, 401, 404, 503),
        },
    )
    def post(self, request: Request, thread_id: uuid.UUID) -> Response:
        thread = owned_thread(request, thread_id)
        params = UploadFileSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        upload = params.validated_data["file"]
        caller = api_caller(request)
        try:
            validate_file_size(upload.size, max_bytes=settings.EXECUTION_MAX_FILE_BYTES)
        except ToolError as error:
            record_security_event(error, caller, thread=thread)
            raise
        path = params.validated_data.get("path") or upload.name
        row = ToolExecutor().write_file(
            file_path=path, content=upload.read(), caller=caller, thread=thread
        )
        return Response(WorkspaceFileSerializer(row).data, status=status.HTTP_201_CREATED)


class ThreadFileDetailView(APIView):
    """One file of a thread: its raw bytes, or delete it."""

    @extend_schema(
        operation_id="thread_file_download",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            **errors(400, 401, 404, 503),
        },
    )
    def get(self, request: Request, thread_id: uuid.UUID, file_path: str) -> FileResponse:
        thread = owned_thread(request, thread_id)
        path, content = ToolExecutor().read_file(
            file_path=file_path, caller=api_caller(request), thread=thread
        )
        # Always a download, never rendered on our origin: a workspace .html or .svg is user
        # content and must not run as our page. FileResponse writes Content-Disposition (with
        # RFC 5987 encoding for any name) and guesses the type from the name.
        response = FileResponse(
            io.BytesIO(content), as_attachment=True, filename=path.rsplit("/", 1)[-1]
        )
        response["Content-Security-Policy"] = "sandbox; default-src 'none'"
        response["X-Content-Type-Options"] = "nosniff"
        return response

    @extend_schema(
        operation_id="thread_file_delete", responses={204: None, **errors(400, 401, 404, 503)}
    )
    def delete(self, request: Request, thread_id: uuid.UUID, file_path: str) -> Response:
        thread = owned_thread(request, thread_id)
        ToolExecutor().delete_file(file_path=file_path, caller=api_caller(request), thread=thread)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- packages ---------------------------------------------------------------------------------


@extend_schema_view(
    get=extend_schema(responses={200: PackageInstallSerializer(many=True), **errors(401, 404)})
)
class ThreadPackageListView(generics.ListAPIView):
    """A thread's package installs, newest first."""

    serializer_class = PackageInstallSerializer

    def get_queryset(self) -> QuerySet[PackageInstall]:
        thread = owned_thread(self.request, self.kwargs["thread_id"])
        return PackageInstall.objects.filter(thread=thread).order_by("-created_at", "-id")
