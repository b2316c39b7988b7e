"""Account endpoints: who-am-I for API clients (the JWT views come from simplejwt)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.serializers import MeSerializer


class MeView(APIView):
    """Return the authenticated user (JWT or session); 401 for anyone else."""

    @extend_schema(responses=MeSerializer, summary="Who am I")
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request.user).data)
