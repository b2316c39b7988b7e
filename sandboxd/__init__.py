"""sandboxd: an E2B-compatible sandbox server for one machine.

The official ``e2b`` / ``e2b-code-interpreter`` SDKs talk to it unchanged: one URL serves the
control plane (``/v2/sandboxes`` …) and every sandbox (routed by the ``E2b-Sandbox-Id`` and
``E2b-Sandbox-Port`` headers). Sandboxes are bubblewrap jails (``sandboxd.jail``) with Jupyter
kernels (``sandboxd.interpreter``). This package never imports Django.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The envd version sandboxd reports to the SDK, which gates features client-side on it.
# 0.6.4 enables everything sandboxd implements: default user >= 0.4.0, close_stdin >= 0.5.2,
# octet-stream uploads >= 0.5.7, file metadata as user.e2b.* xattrs >= 0.6.2, a watch
# event's entry >= 0.6.3, watches allowed on network mounts >= 0.6.4 (inotify inside the
# sandbox watches any file system the same way).
ENVD_VERSION = "0.6.4"
