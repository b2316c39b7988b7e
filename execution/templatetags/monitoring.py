"""Template tags of the monitoring pages: the header's usage badge."""

from __future__ import annotations

from typing import Any

from django import template

from execution.monitoring.budgets import daily_usage

register = template.Library()


@register.inclusion_tag("monitoring/usage_badge.html", takes_context=True)
def usage_badge(context: dict[str, Any]) -> dict[str, Any]:
    """Today's runs and CPU seconds of the logged-in user, against their budgets."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"usage": None}
    return {"usage": daily_usage(user)}
