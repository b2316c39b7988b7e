"""The sandbox contract (base.py) and its implementations, chosen by `SANDBOX_BACKEND`."""

from __future__ import annotations

import functools

from django.conf import settings
from django.utils.module_loading import import_string

from execution.sandbox.base import SandboxBackend


@functools.lru_cache(maxsize=8)
def _backend(path: str, options: tuple[str, ...]) -> SandboxBackend:
    backend_class = import_string(path)
    return backend_class()


def get_backend() -> SandboxBackend:
    """The process's backend for the current settings (one instance per configuration, so a
    test's settings override gets its own and the production one keeps its connections)."""
    options = (
        settings.E2B_API_KEY, settings.E2B_DOMAIN, settings.SANDBOXD_URL, settings.SANDBOXD_API_KEY
    )  # fmt: skip
    return _backend(settings.SANDBOX_BACKEND, options)


def reset_backends() -> None:
    """Forget every backend instance (tests: the next get_backend() makes a fresh one)."""
    _backend.cache_clear()
