"""sandboxd's configuration: command-line options with ``SANDBOXD_*`` environment fallbacks.

Every option has one definition in ``OPTIONS`` (flag, environment variable, type, default,
help); the CLI, the README table and ``Config`` all derive from it. A bad value fails loudly
with ``ConfigError`` naming the option, never silently falls back to a default.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The project root: sandboxd/ lives directly under it, and so does var/ (built by `make setup`).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the option."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"expected a positive integer, got {raw!r}")
    return value


def _parse_non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(f"expected a non-negative integer, got {raw!r}")
    return value


def _parse_port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"expected a TCP port 0-65535, got {raw!r}")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError(f"expected a positive number, got {raw!r}")
    return value


@dataclass(frozen=True)
class Option:
    """One setting: its CLI flag, environment variable, parser, default and help text.

    ``default`` is the value used when neither the flag nor the variable is given; ``None``
    means "not set" (for the jail limits: the jail's own safe default applies).
    """

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "SANDBOXD_" + self.name.upper()


# Limits are given in the units people think in (MiB, cores) and turned into
# ``sandboxd.jail.Limits`` fields by ``Config.limit_overrides``.
_LIMIT_FIELDS: dict[str, tuple[str, int]] = {
    "memory_mb": ("memory_bytes", MIB),
    "pids": ("pids", 1),
    "tmp_mb": ("tmp_bytes", MIB),
    "workspace_mb": ("workspace_bytes", MIB),
    "file_size_mb": ("file_size_bytes", MIB),
    "open_files": ("open_files", 1),
}

OPTIONS: tuple[Option, ...] = (
    Option("host", str, "127.0.0.1", "address to listen on"),
    Option("port", _parse_port, 49982, "TCP port to listen on (0 picks a free port)"),
    Option("api_key", str, None, "API key clients send as X-API-KEY"),
    Option(
        "state_dir",
        Path,
        PROJECT_ROOT / "var" / "sandboxd",
        "directory for sandbox state; it and its parents must be traversable (o+x)",
    ),
    Option(
        "sandbox_env",
        Path,
        PROJECT_ROOT / "var" / "sandbox-env",
        "the sandbox Python environment (built by make setup), seen inside at /opt/python",
    ),
    Option("max_sandboxes", _parse_positive_int, 16, "live sandboxes allowed; more get 429"),
    Option("pool_size", _parse_non_negative_int, 2, "pre-started sandboxes kept ready"),
    Option("default_timeout", _parse_positive_int, 300, "sandbox lifetime (s) when not given"),
    Option("max_timeout", _parse_positive_int, 86_400, "longest sandbox lifetime (s) allowed"),
    Option(
        "max_file_mb", _parse_positive_int, 100, "largest file (MiB) read or written via /files"
    ),
    Option("egress", _parse_bool, True, "allow pip/npm installs through the allow-list proxy"),
    Option("memory_mb", _parse_positive_int, None, "memory per sandbox (MiB; default 1024)"),
    Option("pids", _parse_positive_int, None, "processes per sandbox (default 256)"),
    Option("cpus", _parse_positive_float, None, "CPU quota per sandbox in cores (default 1.0)"),
    Option("tmp_mb", _parse_positive_int, None, "size of the tmpfs /tmp (MiB; default 256)"),
    Option("workspace_mb", _parse_positive_int, None, "size cap of /home/user (MiB; default 1024)"),
    Option("file_size_mb", _parse_positive_int, None, "largest file a sandbox writes (MiB; 512)"),
    Option("open_files", _parse_positive_int, None, "open files per process (default 1024)"),
    Option("log_level", str, "info", "logging level: debug, info, warning, error"),
    Option(
        "log_file",
        Path,
        None,
        "write the log here, rotated at 10 MiB with 5 old files kept (default: stderr)",
    ),
)
_OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Config:
    """Resolved settings for one sandboxd process (see ``OPTIONS`` for meanings)."""

    api_key: str
    host: str = "127.0.0.1"
    port: int = 49982
    state_dir: Path = PROJECT_ROOT / "var" / "sandboxd"
    sandbox_env: Path = PROJECT_ROOT / "var" / "sandbox-env"
    max_sandboxes: int = 16
    pool_size: int = 2
    default_timeout: int = 300
    max_timeout: int = 86_400
    max_file_mb: int = 100
    egress: bool = True
    limits: Mapping[str, int | float] = field(default_factory=dict)
    log_level: str = "info"
    log_file: Path | None = None

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * MIB

    def limit_overrides(self) -> dict[str, int | float]:
        """Keyword arguments for ``sandboxd.jail.Limits``: only the limits that were set, so
        the jail's own defaults stay the single source for the rest."""
        overrides: dict[str, int | float] = {}
        for name, value in self.limits.items():
            if name == "cpus":
                overrides["cpus"] = float(value)
            else:
                field_name, unit = _LIMIT_FIELDS[name]
                overrides[field_name] = int(value) * unit
        return overrides


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sandboxd`` argument parser (subcommands ``serve`` and ``doctor``)."""
    parser = argparse.ArgumentParser(
        prog="python -m sandboxd",
        description="An E2B-compatible sandbox server (bubblewrap, cgroups, Jupyter kernels).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the control plane and every sandbox on one URL",
        description="Every option can also be set with its SANDBOXD_* environment variable.",
    )
    for option in OPTIONS:
        default = "required" if option.name == "api_key" else option.default
        if option.name == "log_file":
            default = "stderr"
        elif default is None:
            default = "the jail's default"
        serve.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.name.upper(),
            help=f"{option.help} [{option.env}; default: {default}]",
        )
    doctor = commands.add_parser(
        "doctor", help="report the protections in force here; exit 1 when a sandbox is unsafe"
    )
    doctor.add_argument(
        "--state-dir", dest="state_dir", default=None, help="state directory to check"
    )
    doctor.add_argument(
        "--sandbox-env", dest="sandbox_env", default=None, help="sandbox environment to check"
    )
    return parser


def resolve(
    cli_values: Mapping[str, str | None], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Parse every option: the CLI value wins, then ``SANDBOXD_<NAME>``, then the default.

    Raises ``ConfigError`` naming the flag and the variable when a value does not parse.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = cli_values.get(option.name)
        source = option.flag
        if raw is None:
            raw = environ.get(option.env)
            source = option.env
        if raw is None or raw == "":
            values[option.name] = option.default
            continue
        try:
            values[option.name] = option.parse(raw)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
    return values


def config_from(
    cli_values: Mapping[str, str | None], environ: Mapping[str, str] | None = None
) -> Config:
    """Build a ``Config`` for ``serve``; raises ``ConfigError`` without an API key."""
    values = resolve(cli_values, environ)
    api_key = values.pop("api_key")
    if not api_key:
        raise ConfigError(
            "an API key is required: pass --api-key KEY or set SANDBOXD_API_KEY "
            "(clients send it as X-API-KEY)"
        )
    level = str(values["log_level"]).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"--log-level: expected debug, info, warning or error, got {level!r}")
    values["log_level"] = level
    limits = {name: values.pop(name) for name in (*_LIMIT_FIELDS, "cpus")}
    values["limits"] = {name: value for name, value in limits.items() if value is not None}
    if values["default_timeout"] > values["max_timeout"]:
        raise ConfigError("--default-timeout must not exceed --max-timeout")
    values["state_dir"] = Path(values["state_dir"]).absolute()
    values["sandbox_env"] = Path(values["sandbox_env"]).absolute()
    if values["log_file"] is not None:
        values["log_file"] = Path(values["log_file"]).absolute()
    return Config(api_key=api_key, **values)


def untraversable_ancestor(path: Path) -> Path | None:
    """The first existing directory on ``path``'s way from ``/`` that other users cannot
    traverse (no o+x), or ``None`` when the sandbox uids can reach ``path``.

    bubblewrap opens bind-mount sources as the unprivileged sandbox uid, so a state dir or
    sandbox env under a 0700 directory such as /root fails with a confusing error later.
    """
    current = Path("/")
    for part in path.absolute().parts[1:]:
        current = current / part
        try:
            mode = current.stat().st_mode
        except FileNotFoundError:
            return None  # the rest will be created by the server with the right mode
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return current
    return None


def describe_options() -> list[tuple[str, str, str, str]]:
    """(flag, environment variable, default, meaning) rows for the README and ``--help``."""
    rows = []
    for option in OPTIONS:
        default = option.default
        if option.name == "api_key":
            default = "(required)"
        elif option.name == "log_file":
            default = "(stderr)"
        elif default is None:
            default = "(jail default)"
        elif isinstance(default, Path):
            default = str(default.relative_to(PROJECT_ROOT))
        rows.append((option.flag, option.env, str(default), option.help))
    return rows


def option(name: str) -> Option:
    """The ``Option`` called ``name`` (raises ``KeyError`` for an unknown one)."""
    return _OPTIONS_BY_NAME[name]
