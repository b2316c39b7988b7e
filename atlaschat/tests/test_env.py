"""The typed environment readers: good values parse, bad values fail naming the variable."""

from __future__ import annotations

import pytest

from atlaschat.env import ImproperEnvValue, envbool, envchoice, envfloat, envint, envlist, envstr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False), ("False", False),
     ("no", False), ("off", False)],
)  # fmt: skip
def test_envbool_reads_the_usual_spellings(raw: str, expected: bool) -> None:
    assert envbool("FLAG", not expected, env={"FLAG": raw}) is expected


@pytest.mark.parametrize("default", [True, False])
def test_envbool_returns_the_default_when_unset_or_blank(default: bool) -> None:
    assert envbool("FLAG", default, env={}) is default
    assert envbool("FLAG", default, env={"FLAG": "  "}) is default


def test_envbool_rejects_anything_else_naming_the_variable() -> None:
    with pytest.raises(ImproperEnvValue, match=r"^DEBUG must be a boolean.*'maybe'"):
        envbool("DEBUG", False, env={"DEBUG": "maybe"})


def test_envint_parses_and_checks_bounds() -> None:
    assert envint("N", 5, env={"N": " 42 "}) == 42
    assert envint("N", 5, env={}) == 5
    assert envint("N", 5, min_value=1, max_value=10, env={"N": "10"}) == 10


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("ten", r"^PORT must be an integer, got 'ten'$"),
        ("1.5", r"^PORT must be an integer, got '1.5'$"),
        ("0", r"^PORT must be at least 1, got 0$"),
        ("70000", r"^PORT must be at most 65535, got 70000$"),
    ],
)
def test_envint_rejects_bad_values_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ImproperEnvValue, match=message):
        envint("PORT", 8000, min_value=1, max_value=65535, env={"PORT": raw})


def test_envfloat_parses_and_checks_bounds() -> None:
    assert envfloat("T", 1.0, env={"T": "2.5"}) == 2.5
    assert envfloat("T", 1.0, env={}) == 1.0
    assert envfloat("T", 1.0, min_value=1.0, max_value=3.0, env={"T": "3"}) == 3.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("soon", r"^TIMEOUT must be a number, got 'soon'$"),
        ("nan", r"^TIMEOUT must be a finite number"),
        ("inf", r"^TIMEOUT must be a finite number"),
        ("0.5", r"^TIMEOUT must be at least 1.0, got 0.5$"),
        ("301", r"^TIMEOUT must be at most 300.0, got 301.0$"),
    ],
)
def test_envfloat_rejects_bad_values_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ImproperEnvValue, match=message):
        envfloat("TIMEOUT", 60.0, min_value=1.0, max_value=300.0, env={"TIMEOUT": raw})


def test_envstr_strips_and_falls_back_on_blank() -> None:
    assert envstr("S", "default", env={"S": "  value "}) == "value"
    assert envstr("S", "default", env={"S": ""}) == "default"
    assert envstr("S", "default", env={}) == "default"


def test_envlist_splits_on_commas_and_drops_empty_items() -> None:
    assert envlist("L", ["a"], env={"L": " x, y ,,z "}) == ["x", "y", "z"]
    assert envlist("L", ["a"], env={}) == ["a"]


def test_envlist_returns_a_copy_of_the_default() -> None:
    default = ["a"]
    envlist("L", default, env={}).append("b")
    assert default == ["a"]


def test_envchoice_accepts_only_the_listed_values() -> None:
    assert envchoice("LEVEL", "INFO", ("INFO", "DEBUG"), env={"LEVEL": "DEBUG"}) == "DEBUG"
    assert envchoice("LEVEL", "INFO", ("INFO", "DEBUG"), env={}) == "INFO"
    with pytest.raises(ImproperEnvValue, match=r"^LEVEL must be one of INFO, DEBUG, got 'loud'$"):
        envchoice("LEVEL", "INFO", ("INFO", "DEBUG"), env={"LEVEL": "loud"})


def test_readers_use_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLASCHAT_TEST_INT", "7")
    assert envint("ATLASCHAT_TEST_INT", 1) == 7
    monkeypatch.setenv("ATLASCHAT_TEST_INT", "seven")
    with pytest.raises(ImproperEnvValue, match="ATLASCHAT_TEST_INT"):
        envint("ATLASCHAT_TEST_INT", 1)
