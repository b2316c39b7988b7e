"""Sandbox templates by name through the real SDK against a real sandboxd: the default
``code-interpreter-v1`` has E2B's data-science stack, ``base`` is minimal, and an unknown
name is E2B's not-found error."""

from __future__ import annotations

import pytest
from e2b import NotFoundException, SandboxException
from e2b_code_interpreter import Sandbox

from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd

FULL_STACK = (
    "scipy sklearn seaborn plotly bs4 openpyxl sympy requests cv2 skimage xarray bokeh "
    "nltk textblob docx xlrd numba"
)


def test_the_code_interpreter_template_has_e2bs_stack_and_base_does_not(
    sandboxd: RunningSandboxd,
) -> None:
    full = Sandbox.create("code-interpreter-v1", **sandboxd.sdk_options())
    base = Sandbox.create("base", **sandboxd.sdk_options())
    try:
        names = FULL_STACK.split()
        imported = full.run_code(
            f"import importlib\n[importlib.import_module(m).__name__ for m in {names!r}]"
        )
        assert imported.error is None, imported.error
        assert full.get_info().template_id == "code-interpreter-v1"

        missing = base.run_code("import scipy")
        assert missing.error is not None and missing.error.name == "ModuleNotFoundError"
        # what the rich results need is in both
        assert base.run_code("import pandas as pd\npd.DataFrame({'a': [1]})").results[0].data
    finally:
        full.kill()
        base.kill()


def test_an_unknown_template_is_refused_as_e2b_refuses_it(sandboxd: RunningSandboxd) -> None:
    with pytest.raises((NotFoundException, SandboxException), match="template 'no-such' not found"):
        Sandbox.create("no-such", **sandboxd.sdk_options())
