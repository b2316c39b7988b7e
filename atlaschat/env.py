"""Typed readers for environment variables.

Every knob of the project is an environment variable with a safe default. These helpers
parse one variable each and fail loudly, naming the variable, when its value is not of
the expected form: a typo in production configuration must stop the start, not be
silently replaced by a default.
"""

from __future__ import annotations

import math
import os
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
