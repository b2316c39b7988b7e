"""Serializers of the accounts API."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from rest_framework import serializers


class MeSerializer(serializers.ModelSerializer):
    """The authenticated user, as `/api/auth/me/` returns it."""

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "is_staff"]
        read_only_fields = fields
