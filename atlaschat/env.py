"""Typed readers for environment variables.

Every knob of the project is an environment variable with a safe default. These helpers
parse one variable each and fail loudly, naming the variable, when its value is not of
the expected form: a typo in production configuration must stop the start, not be
silently replaced by a default.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ImproperEnvValue(ValueError):
    """A variable is set to a value its reader cannot accept; the message names it."""


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    value = (os.environ if env is None else env).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def envbool(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    """Return the variable as a boolean (1/0, true/false, yes/no, on/off)."""
    value = _raw(name, env)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperEnvValue(f"{name} must be a boolean (true/false, 1/0, yes/no), got {value!r}")


def envint(
    name: str,
    default: int,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Return the variable as an integer, within [min_value, max_value] when given."""
    value = _raw(name, env)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperEnvValue(f"{name} must be an integer, got {value!r}") from None
    if min_value is not None and number < min_value:
        raise ImproperEnvValue(f"{name} must be at least {min_value}, got {number}")
    if max_value is not None and number > max_value:
        raise ImproperEnvValue(f"{name} must be at most {max_value}, got {number}")
    return number


def envfloat(
    name: str,
    default: float,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    """Return the variable as a finite float, within [min_value, max_value] when given."""
    value = _raw(name, env)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperEnvValue(f"{name} must be a number, got {value!r}") from None
    # float() accepts "nan" and "inf"; neither is a usable limit or timeout.
    if not math.isfinite(number):
        raise ImproperEnvValue(f"{name} must be a finite number, got {value!r}")
    if min_value is not None and number < min_value:
        raise ImproperEnvValue(f"{name} must be at least {min_value}, got {number}")
    if max_value is not None and number > max_value:
        raise ImproperEnvValue(f"{name} must be at most {max_value}, got {number}")
    return number


def envstr(name: str, default: str, *, env: Mapping[str, str] | None = None) -> str:
    """Return the variable as a string, or the default when unset or blank."""
    value = _raw(name, env)
    return default if value is None else value


def envlist(name: str, default: list[str], *, env: Mapping[str, str] | None = None) -> list[str]:
    """Return a comma-separated variable as a list of non-empty, stripped items."""
    value = _raw(name, env)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def envchoice(
    name: str, default: str, choices: tuple[str, ...], *, env: Mapping[str, str] | None = None
) -> str:
    """Return the variable when it is one of `choices`."""
    value = _raw(name, env)
    if value is None:
        return default
    if value not in choices:
        raise ImproperEnvValue(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


# DRF's rate syntax: "<count>/<period>", where DRF reads only the period's first letter.
_RATE_PERIODS = ("s", "m", "h", "d")


def envrate(name: str, default: str, *, env: Mapping[str, str] | None = None) -> str:
    """Return a request rate in DRF's form "N/second|minute|hour|day" (N >= 1).

    DRF parses a rate on the first request it throttles; checking it here makes a typo stop
    the start instead of failing that request.
    """
    value = envstr(name, default, env=env)
    count, _, period = value.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or period.strip()[:1] not in _RATE_PERIODS:
        raise ImproperEnvValue(
            f"{name} must be a rate like 120/minute (N/second|minute|hour|day), got {value!r}"
        )
    return value


def envregexlist(
    name: str, default: list[str], *, env: Mapping[str, str] | None = None
) -> list[str]:
    """Return a comma-separated list of regular expressions, each one compiled once here so
    that a malformed pattern stops the start (the list keeps the source strings)."""
    patterns = envlist(name, default, env=env)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ImproperEnvValue(
                f"{name} has a malformed regular expression {pattern!r}: {exc}"
            ) from None
    return patterns
