"""How settings.py turns the environment into configuration.

Each test executes a fresh copy of the settings module under a controlled environment
(runpy), so it sees exactly what a server started with that environment would.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import atlaschat.settings
from atlaschat.env import ImproperEnvValue

SETTINGS_FILE = Path(atlaschat.settings.__file__)
# Variables the tests below control; anything the caller exported is removed first.
CONTROLLED = ("SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "PYTEST_VERSION")


def load_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """Execute settings.py with `env` on top of a process environment cleaned of CONTROLLED."""
    for name in CONTROLLED:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


def test_a_secret_key_is_required_when_debug_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY must be set"):
        load_settings(monkeypatch)


def test_the_given_secret_key_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(monkeypatch, SECRET_KEY="k" * 50)["SECRET_KEY"] == "k" * 50


def test_debug_runs_without_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(monkeypatch, DEBUG="true")
    assert settings["DEBUG"] is True
    assert settings["SECRET_KEY"]


def test_under_pytest_a_throwaway_random_key_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_settings(monkeypatch, PYTEST_VERSION="9")["SECRET_KEY"]
    second = load_settings(monkeypatch, PYTEST_VERSION="9")["SECRET_KEY"]
    assert len(first) >= 50
    assert first != second


def test_debug_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(monkeypatch, SECRET_KEY="x")["DEBUG"] is False


def test_without_database_url_the_database_is_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    database = load_settings(monkeypatch, SECRET_KEY="x")["DATABASES"]["default"]
    # Django's SQLite backend, with the kept-connection health check of sqlite3_backend.
    assert database["ENGINE"] == "atlaschat.sqlite3_backend"
    assert database["CONN_HEALTH_CHECKS"] is True


def test_database_url_switches_to_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        monkeypatch, SECRET_KEY="x", DATABASE_URL="postgres://atlas:pw@127.0.0.1:5433/atlasdb"
    )
    database = settings["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == ("atlasdb", "atlas", "pw")
    assert (database["HOST"], database["PORT"]) == ("127.0.0.1", 5433)


def test_without_redis_url_the_channel_layer_is_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = load_settings(monkeypatch, SECRET_KEY="x")["CHANNEL_LAYERS"]["default"]
    assert layer["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def test_redis_url_switches_to_the_redis_channel_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(monkeypatch, SECRET_KEY="x", REDIS_URL="redis://127.0.0.1:6379/3")
    layer = settings["CHANNEL_LAYERS"]["default"]
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert layer["CONFIG"]["hosts"] == [
        {"address": "redis://127.0.0.1:6379/3", "socket_timeout": 15}
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "perhaps"),
        ("JWT_ACCESS_MINUTES", "fifteen"),
        ("JWT_ACCESS_MINUTES", "0"),
        ("SANDBOX_TIMEOUT_SECONDS", "5"),
        ("EXECUTION_MAX_TIMEOUT", "nan"),
        ("LOG_LEVEL", "chatty"),
        ("SECURE_COOKIES", "2"),
        ("EXECUTION_THROTTLE_RATE", "120/fortnight"),
        ("INSTALL_THROTTLE_RATE", "lots"),
        ("EXECUTION_THROTTLE_RATE", "0/minute"),
        ("LOGIN_FAILURE_LIMIT", "0"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    with pytest.raises(ImproperEnvValue, match=rf"^{name} must"):
        load_settings(monkeypatch, SECRET_KEY="x", **{name: value})


def test_jwt_lifetimes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(monkeypatch, SECRET_KEY="x", JWT_ACCESS_MINUTES="5")
    jwt = settings["SIMPLE_JWT"]
    assert jwt["ACCESS_TOKEN_LIFETIME"].total_seconds() == 300
    assert jwt["ROTATE_REFRESH_TOKENS"] is True
    assert jwt["BLACKLIST_AFTER_ROTATION"] is True


def test_allowed_hosts_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(monkeypatch, SECRET_KEY="x", ALLOWED_HOSTS="a.example, b.example")
    assert settings["ALLOWED_HOSTS"] == ["a.example", "b.example"]


def test_secure_cookies_turn_on_both_secure_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(monkeypatch, SECRET_KEY="x", SECURE_COOKIES="1")
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["CSRF_COOKIE_SECURE"] is True


def test_a_malformed_dangerous_pattern_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ImproperEnvValue, match=r"^EXECUTION_DANGEROUS_PATTERNS has a malformed"):
        load_settings(monkeypatch, SECRET_KEY="x", EXECUTION_DANGEROUS_PATTERNS=r"os\.system,(")


def test_request_bodies_may_hold_a_file_of_the_file_size_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Django's own 2.5 MiB would answer 413 before the 10 MiB file limit could apply.
    settings = load_settings(monkeypatch, SECRET_KEY="x")
    assert settings["DATA_UPLOAD_MAX_MEMORY_SIZE"] >= settings["EXECUTION_MAX_FILE_BYTES"] * 4 // 3
