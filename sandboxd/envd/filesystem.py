"""envd's ``filesystem.Filesystem`` service: Stat, ListDir, MakeDir, Move, Remove.

Every operation goes through the sandbox's ``Jail``, which performs it inside the sandbox's
own view of the file system, so a symlink planted by sandboxed code never reaches a host
file. Directory watching (the ``WatchDir`` stream and the polling watcher API) is done by
comparing listings (``sandboxd.envd.watch``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb
from protobuf import Oneof

from sandboxd.envd.entries import entry_info
from sandboxd.envd.errors import JAIL_ERRORS, connect_error, wrong_user
from sandboxd.envd.process import request_user
from sandboxd.envd.watch import MAX_WATCHERS, POLL_SECONDS, DirectoryPoller

if TYPE_CHECKING:
    from connectrpc.request import RequestContext

    from sandboxd.jail import Jail

# A watch stream with nothing to report still sends a keepalive this often.
WATCH_KEEPALIVE_SECONDS = 30.0


def check_user(ctx: RequestContext[Any, Any]) -> None:
    """Refuse (``permission_denied``) a call asking for another account than ``user``."""
    refusal = wrong_user(request_user(ctx), "file operations")
    if refusal:
        raise ConnectError(Code.PERMISSION_DENIED, refusal)


class FilesystemService:
    """``filesystem.Filesystem`` for one sandbox."""

    def __init__(self, jail: Jail) -> None:
        self._jail = jail
        self._watchers: dict[str, DirectoryPoller] = {}

    async def stat(
        self, request: filesystem_pb.StatRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.StatResponse:
        check_user(ctx)
        try:
            entry = await self._jail.stat(request.path)
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return filesystem_pb.StatResponse(entry=entry_info(entry))

    async def list_dir(
        self, request: filesystem_pb.ListDirRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.ListDirResponse:
        check_user(ctx)
        # The SDK sends depth 0 for "default", which envd treats as 1.
        depth = request.depth or 1
        try:
            entries = await self._jail.list_dir(request.path, depth)
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return filesystem_pb.ListDirResponse(entries=[entry_info(entry) for entry in entries])

    async def make_dir(
        self, request: filesystem_pb.MakeDirRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.MakeDirResponse:
        check_user(ctx)
        try:
            created = await self._jail.make_dir(request.path)
            if not created:
                raise ConnectError(
                    Code.ALREADY_EXISTS, f"directory {request.path!r} already exists"
                )
            entry = await self._jail.stat(request.path)
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return filesystem_pb.MakeDirResponse(entry=entry_info(entry))

    async def move(
        self, request: filesystem_pb.MoveRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.MoveResponse:
        check_user(ctx)
        try:
            entry = await self._jail.move(request.source, request.destination)
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return filesystem_pb.MoveResponse(entry=entry_info(entry))

    async def remove(
        self, request: filesystem_pb.RemoveRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.RemoveResponse:
        check_user(ctx)
        try:
            await self._jail.remove(request.path)
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return filesystem_pb.RemoveResponse()

    async def _poller(self, request: Any) -> DirectoryPoller:
        poller = DirectoryPoller(
            self._jail,
            request.path,
            recursive=request.recursive,
            include_entry=request.include_entry,
        )
        try:
            await poller.start()
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return poller

    async def watch_dir(
        self, request: filesystem_pb.WatchDirRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[filesystem_pb.WatchDirResponse]:
        check_user(ctx)
        poller = await self._poller(request)
        yield filesystem_pb.WatchDirResponse(
            event=Oneof("start", filesystem_pb.WatchDirResponse.StartEvent())
        )
        quiet = 0.0
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                events = await poller.poll()
            except JAIL_ERRORS as error:
                raise connect_error(error) from None
            for event in events:
                yield filesystem_pb.WatchDirResponse(event=Oneof("filesystem", event))
            quiet = 0.0 if events else quiet + POLL_SECONDS
            if quiet >= WATCH_KEEPALIVE_SECONDS:
                quiet = 0.0
                yield filesystem_pb.WatchDirResponse(
                    event=Oneof("keepalive", filesystem_pb.WatchDirResponse.KeepAlive())
                )

    async def create_watcher(
        self, request: filesystem_pb.CreateWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.CreateWatcherResponse:
        check_user(ctx)
        if len(self._watchers) >= MAX_WATCHERS:
            raise ConnectError(
                Code.RESOURCE_EXHAUSTED,
                f"a sandbox may hold {MAX_WATCHERS} watchers; stop one first",
            )
        poller = await self._poller(request)
        watcher_id = secrets.token_hex(8)
        self._watchers[watcher_id] = poller
        return filesystem_pb.CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(
        self, request: filesystem_pb.GetWatcherEventsRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.GetWatcherEventsResponse:
        poller = self._watcher(request.watcher_id)
        try:
            events = await poller.poll()
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return filesystem_pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(
        self, request: filesystem_pb.RemoveWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.RemoveWatcherResponse:
        self._watcher(request.watcher_id)
        del self._watchers[request.watcher_id]
        return filesystem_pb.RemoveWatcherResponse()

    def _watcher(self, watcher_id: str) -> DirectoryPoller:
        poller = self._watchers.get(watcher_id)
        if poller is None:
            raise ConnectError(Code.NOT_FOUND, f"watcher {watcher_id!r} not found")
        return poller
