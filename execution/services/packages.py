"""Running pip and npm inside a sandbox, never through a shell with user text in it.

The specs reaching here were validated (validation.py: names and versions only, no shell
characters) and go to the sandbox as one argv (the contract's `run_command`, which quotes
each element), so even a spec that slipped through could only ever be one argument. `--`
ends the installer's options for the same reason: a spec can never become a flag.
"""

from __future__ import annotations

import shlex
import threading
from dataclasses import dataclass

from execution.sandbox.base import OutputCallback, Sandbox
from execution.services.validation import WORKSPACE_ROOT

# Logs are kept whole up to this size; beyond it the middle is cut and marked.
MAX_INSTALL_LOG_CHARS = 64 * 1024


def install_argv(manager: str, specs: list[str]) -> list[str]:
    """Return the argv that installs validated `specs` with pip or npm."""
    if manager == "pip":
        # Wheels only: an sdist would run arbitrary setup.py code at install time.
        return [
            "python3", "-m", "pip", "install", "--only-binary=:all:", "--no-input",
            "--disable-pip-version-check", "--progress-bar=off", "--", *specs,
        ]  # fmt: skip
    if manager == "npm":
        # No lifecycle scripts: a package's install script is arbitrary code.
        return [
            "npm", "install", "--ignore-scripts", "--no-audit", "--no-fund",
            "--no-save", "--no-package-lock", "--", *specs,
        ]  # fmt: skip
    raise ValueError(f"unknown package manager {manager!r}")


@dataclass
class InstallOutcome:
    """What one install command did: success, its exit code and its combined log."""

    succeeded: bool
    exit_code: int | None
    log: str


def _clip(log: str) -> str:
    if len(log) <= MAX_INSTALL_LOG_CHARS:
        return log
    half = MAX_INSTALL_LOG_CHARS // 2
    return f"{log[:half]}\n[… {len(log) - MAX_INSTALL_LOG_CHARS} characters cut …]\n{log[-half:]}"


class InstallLog:
    """An install's output as it comes, for another thread to store while the install runs.

    `add` is called on the service portal's loop (the command's output callback); `take`
    from the thread that waits for the install. Keeps at most MAX_INSTALL_LOG_CHARS (the
    head, then a mark): the final log, clipped by `_clip`, replaces it when the install ends.
    """

    def __init__(self, header: str) -> None:
        self._lock = threading.Lock()
        self._text = header
        self._changed = True

    def add(self, text: str) -> None:
        with self._lock:
            if len(self._text) < MAX_INSTALL_LOG_CHARS:
                self._text += text[: MAX_INSTALL_LOG_CHARS - len(self._text)]
                if len(self._text) >= MAX_INSTALL_LOG_CHARS:
                    self._text += "\n[… more output; the whole log is kept when it ends …]\n"
                self._changed = True

    def take(self) -> str | None:
        """The log so far if it grew since the last call, else None."""
        with self._lock:
            if not self._changed:
                return None
            self._changed = False
            return self._text


def install_command(manager: str, specs: list[str]) -> str:
    """The one command line that installs validated `specs` (each quoted as one argument)."""
    return shlex.join(install_argv(manager, specs))


async def run_install(
    sandbox: Sandbox,
    manager: str,
    specs: list[str],
    *,
    time_limit: float,
    on_output: OutputCallback | None = None,
) -> InstallOutcome:
    """Install `specs` in the sandbox and return the outcome; a failed install (non-zero exit)
    is an outcome, not an exception. The contract's failures propagate. `on_output` gets the
    installer's stdout and stderr as they come (on the service portal's loop)."""
    argv = install_argv(manager, specs)
    result = await sandbox.run_command(
        argv, cwd=WORKSPACE_ROOT, time_limit=time_limit, on_output=on_output
    )
    log = f"$ {shlex.join(argv)}\n{result.stdout}{result.stderr}"
    return InstallOutcome(result.exit_code == 0, result.exit_code, _clip(log))
