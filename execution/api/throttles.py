"""Request-rate limits on the expensive endpoints (README: "Security and fair use"), per user.

Rates come from settings (EXECUTION_THROTTLE_RATE, INSTALL_THROTTLE_RATE) and are read on
each request, so a deployment changes them with an environment variable. A throttled request
is answered 429 with Retry-After and audited as a SecurityEvent (see api/exceptions.py). The
counters live in Django's cache: per process with the default local-memory cache, shared when
a shared cache is configured.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import UserRateThrottle


class ExecuteRateThrottle(UserRateThrottle):
    """Runs of code (REST execute) per user."""

    scope = "execute"

    def get_rate(self) -> str:
        return settings.EXECUTION_THROTTLE_RATE


class InstallRateThrottle(UserRateThrottle):
    """Package installs per user."""

    scope = "install"

    def get_rate(self) -> str:
        return settings.INSTALL_THROTTLE_RATE
