"""envd: the in-sandbox agent API of E2B (port 49983), served by sandboxd for one sandbox.

``Envd(jail, ...)`` answers every request the SDK sends with ``E2b-Sandbox-Port: 49983``
once the server has found the sandbox and checked its access token:

* ``GET /health`` → 204;
* ``GET``/``POST /files`` (``sandboxd.envd.files``);
* Connect RPC ``/filesystem.Filesystem/*`` and ``/process.Process/*``, served by connectrpc's
  own server through the generated application classes of the ``e2b`` package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from aiohttp import web
from e2b.envd.filesystem.filesystem_connect import FilesystemASGIApplication
from e2b.envd.process.process_connect import ProcessASGIApplication

from sandboxd.envd import files
from sandboxd.envd.asgi import serve_asgi
from sandboxd.envd.errors import files_error
from sandboxd.envd.filesystem import FilesystemService
from sandboxd.envd.process import ProcessService, ProcessTable

if TYPE_CHECKING:
    from sandboxd.jail import Jail

ENVD_PORT = 49983


class Envd:
    """envd for one sandbox: its processes table and its two RPC applications."""

    def __init__(self, jail: Jail, *, envs: Mapping[str, str], max_file_bytes: int) -> None:
        self._jail = jail
        self._max_file_bytes = max_file_bytes
        self.processes = ProcessTable(jail, envs)
        self._filesystem = FilesystemService(jail)
        self._filesystem_app = FilesystemASGIApplication(self._filesystem)
        self._process_app = ProcessASGIApplication(ProcessService(self.processes))

    def set_envs(self, envs: Mapping[str, str]) -> None:
        """Sandbox-level environment (create's ``envVars``) for every later command."""
        self.processes.set_base_envs(envs)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one envd request (auth and sandbox lookup are the caller's job)."""
        path = request.path
        if path == "/health":
            return web.Response(status=204)
        if path == "/files":
            if request.method == "GET":
                return await files.download(request, self._jail, max_bytes=self._max_file_bytes)
            if request.method == "POST":
                return await files.upload(request, self._jail, max_bytes=self._max_file_bytes)
            return files_error(405, f"{request.method} is not allowed on /files")
        if path.startswith("/filesystem.Filesystem/"):
            return await serve_asgi(self._filesystem_app, request)
        if path.startswith("/process.Process/"):
            return await serve_asgi(self._process_app, request)
        return files_error(404, f"envd has no {path}")

    async def close(self) -> None:
        """Stop the process pumps and watchers (call after the jail is destroyed)."""
        await self.processes.close()
        await self._filesystem.close()
