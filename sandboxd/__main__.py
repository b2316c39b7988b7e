"""``python -m sandboxd serve|doctor``.

``serve`` refuses to start without an API key, with a state dir or sandbox env the sandbox
uids cannot traverse, or on a host where a sandbox cannot be made safe (there is no
unsandboxed mode). When it is ready it prints exactly one line to stdout::

    sandboxd listening on http://HOST:PORT

``doctor`` prints what protects a sandbox on this machine and exits 1 when one would be
unsafe. Exit codes: 0 fine, 1 unsafe host or runtime failure, 2 bad configuration.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
from collections.abc import Sequence
from pathlib import Path

# sandboxd is one process with a registry of its own (sandboxd.prometheus). A multiprocess
# directory meant for the web workers (scripts/run.sh, the tests) must not switch
# prometheus_client to value files there, which it reads once, on import, and which the
# server, run as another user, may not even be able to write.
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
os.environ.pop("prometheus_multiproc_dir", None)

from sandboxd.config import (
    ConfigError,
    build_parser,
    config_from,
    option,
    resolve,
    untraversable_ancestor,
)
from sandboxd.logs import configure as configure_logging

EXIT_UNSAFE = 1
EXIT_CONFIG = 2


def _fail(message: str, code: int) -> int:
    print(f"sandboxd: {message}", file=sys.stderr, flush=True)
    return code


def _check_paths(paths: Sequence[tuple[str, Path]]) -> str | None:
    """A message when a path's ancestors are closed to other users (bwrap opens bind
    sources as the sandbox uid), else ``None``."""
    for label, path in paths:
        blocked = untraversable_ancestor(path)
        if blocked is not None:
            return (
                f"{label} {path} is not reachable by the sandbox uids: {blocked} has no "
                "o+x permission; choose a path outside it (e.g. under /var/lib or /srv)"
            )
    return None


def run_serve(cli_values: dict[str, str | None]) -> int:
    try:
        config = config_from(cli_values)
    except ConfigError as error:
        return _fail(str(error), EXIT_CONFIG)
    problem = _check_paths(
        [
            ("state dir", config.state_dir),
            ("sandbox env", config.sandbox_env),
            ("full sandbox env", config.sandbox_env_full),
        ]
    )
    if problem:
        return _fail(problem, EXIT_CONFIG)
    if not (config.sandbox_env / "bin" / "python").exists():
        return _fail(
            f"sandbox env {config.sandbox_env} has no bin/python; run `make setup` "
            f"or set {option('sandbox_env').env}",
            EXIT_CONFIG,
        )
    configure_logging(config.log_level, config.log_file)
    # A crash in C code (ZeroMQ aborts on a failed assertion) leaves a Python traceback in
    # the log instead of a silent exit.
    faulthandler.enable()
    from sandboxd.jail import UnsafeHostError
    from sandboxd.server import serve

    def announce(url: str) -> None:
        print(f"sandboxd listening on {url}", flush=True)

    try:
        asyncio.run(serve(config, ready=announce))
    except UnsafeHostError as error:
        print(error.report.text(), file=sys.stderr, flush=True)
        return _fail(f"refusing to start: {error.message}", EXIT_UNSAFE)
    except OSError as error:
        return _fail(f"cannot listen on {config.host}:{config.port}: {error}", EXIT_UNSAFE)
    return 0


def run_doctor(cli_values: dict[str, str | None]) -> int:
    from sandboxd.doctor import inspect_host

    try:
        values = resolve(cli_values)  # the same flags and SANDBOXD_* variables as serve
    except ConfigError as error:
        return _fail(str(error), EXIT_CONFIG)
    report = inspect_host(
        state_dir=Path(values["state_dir"]).absolute(),
        sandbox_env=Path(values["sandbox_env"]).absolute(),
    )
    print(report.text(), flush=True)
    return 0 if report.safe else EXIT_UNSAFE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    arguments = vars(build_parser().parse_args(argv))
    command = arguments.pop("command")
    if command == "serve":
        return run_serve(arguments)
    return run_doctor(arguments)


if __name__ == "__main__":
    sys.exit(main())
