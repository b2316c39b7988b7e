"""envd's ``filesystem.Filesystem`` service: Stat, ListDir, MakeDir, Move, Remove.

Every operation goes through the sandbox's ``Jail``, which performs it inside the sandbox's
own view of the file system, so a symlink planted by sandboxed code never reaches a host
file. Directory watching (the ``WatchDir`` stream and the polling watcher API) is done by
comparing listings (``sandboxd.envd.watch``).
"""

from __future__ import annotations

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
from sandboxd.envd.watch import DirectoryWatch

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
        self._watchers: dict[str, DirectoryWatch] = {}

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

    async def _watch(self, request: Any) -> DirectoryWatch:
        watch = DirectoryWatch(
            self._jail,
            request.path,
            recursive=request.recursive,
            include_entry=request.include_entry,
        )
        try:
            await watch.start()
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return watch

    async def watch_dir(
        self, request: filesystem_pb.WatchDirRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[filesystem_pb.WatchDirResponse]:
        check_user(ctx)
        watch = await self._watch(request)
        try:
            yield filesystem_pb.WatchDirResponse(
                event=Oneof("start", filesystem_pb.WatchDirResponse.StartEvent())
            )
            while True:
                try:
                    events = await watch.next_events(WATCH_KEEPALIVE_SECONDS)
                except JAIL_ERRORS as error:
                    raise connect_error(error) from None
                for event in events:
                    yield filesystem_pb.WatchDirResponse(event=Oneof("filesystem", event))
                if not events:
                    yield filesystem_pb.WatchDirResponse(
                        event=Oneof("keepalive", filesystem_pb.WatchDirResponse.KeepAlive())
                    )
        finally:
            await watch.stop()

    async def create_watcher(
        self, request: filesystem_pb.CreateWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.CreateWatcherResponse:
        check_user(ctx)
        watch = await self._watch(request)
        watcher_id = secrets.token_hex(8)
        self._watchers[watcher_id] = watch
        return filesystem_pb.CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(
        self, request: filesystem_pb.GetWatcherEventsRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.GetWatcherEventsResponse:
        watch = self._watcher(request.watcher_id)
        try:
            events = await watch.events_so_far()
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return filesystem_pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(
        self, request: filesystem_pb.RemoveWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.RemoveWatcherResponse:
        watch = self._watcher(request.watcher_id)
        del self._watchers[request.watcher_id]
        await watch.stop()
        return filesystem_pb.RemoveWatcherResponse()

    async def close(self) -> None:
        """Stop every watcher (the sandbox is going away)."""
        watches, self._watchers = list(self._watchers.values()), {}
        for watch in watches:
            await watch.stop()

    def _watcher(self, watcher_id: str) -> DirectoryWatch:
        watch = self._watchers.get(watcher_id)
        if watch is None:
            raise ConnectError(Code.NOT_FOUND, f"watcher {watcher_id!r} not found")
        return watch
