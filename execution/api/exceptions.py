"""One error shape for the whole API: `{"error": {"code", "message", "details"}}`.

Installed as REST_FRAMEWORK["EXCEPTION_HANDLER"]. DRF's own exceptions (authentication,
permission, parsing, throttling, serializer validation, 404, 405, 415) are mapped to stable
codes; a ToolError from the services keeps its code, status and headers; anything else is
logged and answered as a 500 in the same shape, so a client never has to parse two formats.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

from execution.caller import Caller
from execution.models import Source
from execution.services.errors import ToolError
from execution.throttling import audit_throttled, throttled_error

logger = logging.getLogger(__name__)

# DRF exception class → stable code (the first match in this order wins).
_DRF_CODES: tuple[tuple[type[exceptions.APIException], str], ...] = (
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "authentication_failed"),
    (exceptions.PermissionDenied, "permission_denied"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.ParseError, "malformed_request"),
    (exceptions.Throttled, "throttled"),
    (exceptions.ValidationError, "invalid_request"),
)


def error_response(
    code: str,
    message: str,
    http_status: int,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A Response in the API's error shape."""
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return Response(body, status=http_status, headers=headers)


def _message(exc: exceptions.APIException) -> str:
    """A sentence for the error: DRF's detail when it is text; for a structured detail (as
    simplejwt's 401s carry) its own `detail` entry, never a Python repr of it."""
    detail = exc.detail
    if isinstance(detail, dict):
        inner = detail.get("detail")
        if isinstance(inner, str):
            return inner
        return str(exc.default_detail)
    if isinstance(detail, list):
        return str(detail[0]) if detail and isinstance(detail[0], str) else str(exc.default_detail)
    return str(detail)


def _caller(request: Any) -> Caller:
    return Caller.from_request(request, source=Source.API)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render any exception raised in an API view in the one error shape."""
    request = context.get("request")
    if isinstance(exc, ToolError):
        return error_response(exc.code, exc.message, exc.status, exc.details, exc.headers)
    if isinstance(exc, Http404):
        return error_response("not_found", "Not found.", status.HTTP_404_NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        return error_response("permission_denied", "Permission denied.", status.HTTP_403_FORBIDDEN)
    if isinstance(exc, RequestDataTooBig):
        return error_response(
            "request_too_large",
            "The request body is too large.",
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, exceptions.APIException):
        code = next((c for cls, c in _DRF_CODES if isinstance(exc, cls)), "api_error")
        headers: dict[str, str] = {}
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        if isinstance(exc, exceptions.Throttled):
            # The one 429 of every entry point (execution/throttling.py), audited once.
            error = throttled_error(getattr(exc, "wait", None))
            if request is not None:
                audit_throttled(_caller(request), error)
            return error_response(error.code, error.message, 429, error.details, error.headers)
        if isinstance(exc, exceptions.ValidationError):
            message = "The request is not valid; see details."
            details = (
                exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            )
        else:
            message = _message(exc)
            details = {}
        return error_response(code, message, exc.status_code, details, headers)
    logger.exception("unhandled error in API view", exc_info=exc)
    return error_response(
        "internal_error", "Something went wrong on our side.", status.HTTP_500_INTERNAL_SERVER_ERROR
    )


def _api_json(code: str, message: str, status_code: int) -> JsonResponse:
    body = {"error": {"code": code, "message": message, "details": {}}}
    return JsonResponse(body, status=status_code)


def project_error_handler(
    status_code: int, code: str, message: str, page: Callable[..., HttpResponse]
) -> Callable[..., HttpResponse]:
    """A Django error handler (handler400/404/500) that answers in the API's error shape
    under /api/ (a URL that did not resolve, e.g. a malformed id; a body Django could not
    parse, e.g. broken multipart) and with Django's own page everywhere else."""

    def handler(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        if request.path.startswith("/api/"):
            return _api_json(code, message, status_code)
        return page(request, exception) if exception is not None else page(request)

    return handler
