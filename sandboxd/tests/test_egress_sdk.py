"""Through the real SDK: `pip install x` in a sandbox, then `import x` in its already-running
Python kernel (the install dir is on the kernel's path from the start)."""

from __future__ import annotations

import pytest
from e2b_code_interpreter import Sandbox

from sandboxd.testing import RunningSandboxd

pytestmark = pytest.mark.sandboxd


def test_pip_install_then_import_in_the_running_kernel(sandboxd: RunningSandboxd) -> None:
    sandbox = Sandbox.create(**sandboxd.sdk_options())
    try:
        before = sandbox.run_code("import sys; 'iniconfig' in sys.modules")
        assert before.text == "False"  # the kernel is up before the install
        result = sandbox.commands.run("pip install --quiet iniconfig==2.0.0", timeout=180)
        assert result.exit_code == 0, result.stderr
        execution = sandbox.run_code("import iniconfig; iniconfig.__file__")
        assert execution.error is None, execution.error
        assert execution.text.startswith("/home/user/.local/lib/python-packages/iniconfig/")
        # any other host: the proxy answers 403 (and makes no connection)
        refused = sandbox.commands.run("curl -sS https://example.com 2>&1; true", timeout=60)
        assert "CONNECT tunnel failed, response 403" in refused.stdout
    finally:
        sandbox.kill()
