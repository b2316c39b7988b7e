"""Account endpoints for API clients: the JWT views (simplejwt's, documented for the API
docs) and who-am-I."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.exceptions import AuthenticationFailed, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.serializers import TokenVerifySerializer
from rest_framework_simplejwt.views import (
    TokenBlacklistView,
    TokenObtainPairView,
    TokenRefreshView,
    TokenVerifyView,
)

from accounts.lockout import lockout_error
from accounts.serializers import MeSerializer


class TokenCheckSerializer(TokenVerifySerializer):
    """simplejwt's verify, with a blacklisted token answered like any invalid one (401):
    simplejwt raises a 400 validation error for it, as if the request were malformed."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().validate(attrs)
        except ValidationError as exc:
            raise InvalidToken("Token is blacklisted") from exc


@extend_schema_view(
    post=extend_schema(
        summary="Log in: obtain an access and a refresh token",
        description="Send `Authorization: Bearer <access>` on API requests and websocket "
        "handshakes. Access tokens live JWT_ACCESS_MINUTES, refresh tokens JWT_REFRESH_DAYS.",
    )
)
class TokenObtainView(TokenObtainPairView):
    """Exchange a username and password for a token pair; 429 while locked out."""

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return super().post(request, *args, **kwargs)
        except AuthenticationFailed:
            # django-axes refused before checking the password: it marks the request it
            # was given (DRF's, here) as locked out.
            if getattr(request, "axes_locked_out", False):
                raise lockout_error() from None
            raise


@extend_schema_view(
    post=extend_schema(
        summary="Refresh: a new access and refresh token",
        description="The refresh token sent is blacklisted (rotation): use the new one next.",
    )
)
class TokenRotateView(TokenRefreshView):
    """Exchange a refresh token for a new pair; the old refresh token stops working."""


@extend_schema_view(post=extend_schema(summary="Check that a token is valid"))
class TokenCheckView(TokenVerifyView):
    """Return 200 for a valid token, 401 otherwise (a blacklisted one included)."""

    serializer_class = TokenCheckSerializer


@extend_schema_view(
    post=extend_schema(
        summary="Log out: blacklist a refresh token",
        description="The refresh token can no longer be refreshed. Access tokens already "
        "issued stay valid until they expire (JWT_ACCESS_MINUTES).",
    )
)
class TokenLogoutView(TokenBlacklistView):
    """Blacklist the given refresh token."""


class MeView(APIView):
    """Return the authenticated user (JWT or session); 401 for anyone else."""

    @extend_schema(responses=MeSerializer, summary="Who am I")
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)
