"""Serializers of the accounts API."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from execution.monitoring.budgets import daily_usage


class DailyUsageSerializer(serializers.Serializer):
    """Today's use against the daily budgets (limits null: no limit)."""

    runs = serializers.IntegerField()
    runs_limit = serializers.IntegerField(allow_null=True)
    cpu_seconds = serializers.FloatField()
    cpu_seconds_limit = serializers.IntegerField(allow_null=True)
    resets_at = serializers.DateTimeField()


class MeSerializer(serializers.ModelSerializer):
    """The authenticated user, as `/api/auth/me/` returns it, with today's usage."""

    usage = serializers.SerializerMethodField()

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "is_staff", "usage"]
        read_only_fields = fields

    @extend_schema_field(DailyUsageSerializer)
    def get_usage(self, user: Any) -> dict[str, Any]:
        return daily_usage(user).as_dict()
