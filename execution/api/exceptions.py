"""One error shape for the whole API: `{"error": {"code", "message", "details"}}`.

Installed as REST_FRAMEWORK["EXCEPTION_HANDLER"]. DRF's own exceptions (authentication,
permission, parsing, throttling, serializer validation, 404, 405, 415) are mapped to stable
codes; a ToolError from the services keeps its code, status and headers; anything else is
logged and answered as a 500 in the same shape, so a client never has to parse two formats.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from execution.models import SecurityEvent, Source
from execution.services.errors import ToolError

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


def _client_ip(request: Any) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


def _record_throttle(request: Any, wait: float | None) -> None:
    user = getattr(request, "user", None)
    SecurityEvent.objects.create(
        kind=SecurityEvent.Kind.QUOTA,
        code="throttled",
        message="Request rate limit reached.",
        user=user if user is not None and user.is_authenticated else None,
        source=Source.API,
        client_ip=_client_ip(request),
        details={"path": request.path[:300], "retry_after": wait},
    )


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
        wait = getattr(exc, "wait", None)
        if wait is not None:
            headers["Retry-After"] = str(max(1, int(wait + 0.999)))
        if isinstance(exc, exceptions.Throttled) and request is not None:
            _record_throttle(request, wait)
        if isinstance(exc, exceptions.ValidationError):
            message = "The request is not valid; see details."
            details = (
                exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            )
        else:
            message = str(exc.detail)
            details = {"retry_after": headers["Retry-After"]} if "Retry-After" in headers else {}
        return error_response(code, message, exc.status_code, details, headers)
    logger.exception("unhandled error in API view", exc_info=exc)
    return error_response(
        "internal_error", "Something went wrong on our side.", status.HTTP_500_INTERNAL_SERVER_ERROR
    )
