"""Sandbox templates by name, as E2B's ``Sandbox.create(template=...)`` picks them.

sandboxd knows two, each a Python environment built by ``make setup``:

* ``code-interpreter-v1`` (the default, as in E2B's code-interpreter SDK): the base
  environment plus the data-science stack E2B's code-interpreter template pre-installs
  (``sandboxd/sandbox-requirements-full.txt``, in ``--sandbox-env-full``). Without that
  environment on disk (a checkout that never ran ``make setup``), this template is the base
  one, and the server says so when it starts.
* ``base``: the minimal environment (``sandboxd/sandbox-requirements.txt``: the kernel and
  what the rich results need).

An unknown name is refused as E2B refuses it: 404 "template '<name>' not found".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from sandboxd.config import Config

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "code-interpreter-v1"
BASE_TEMPLATE = "base"


@dataclass(frozen=True)
class Template:
    name: str
    sandbox_env: Path


class UnknownTemplate(Exception):
    """No template by this name; ``message`` is E2B's."""

    def __init__(self, name: str) -> None:
        self.message = f"template '{name}' not found"
        super().__init__(self.message)


class Templates:
    """The templates of one server (from its configuration)."""

    def __init__(self, config: Config) -> None:
        full = config.sandbox_env_full
        if not (full / "bin" / "python").exists():
            log.warning(
                "%s has no environment at %s (run make setup): it is the base template here",
                DEFAULT_TEMPLATE,
                full,
            )
            full = config.sandbox_env
        self._by_name = {
            DEFAULT_TEMPLATE: Template(DEFAULT_TEMPLATE, full),
            BASE_TEMPLATE: Template(BASE_TEMPLATE, config.sandbox_env),
        }

    def get(self, name: str) -> Template:
        """The template called `name`; raises UnknownTemplate."""
        template = self._by_name.get(name)
        if template is None:
            raise UnknownTemplate(name)
        return template

    @property
    def default(self) -> Template:
        return self._by_name[DEFAULT_TEMPLATE]
