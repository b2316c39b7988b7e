"""envd's ``filesystem.Filesystem`` service: Stat, ListDir, MakeDir, Move, Remove.

Every operation goes through the sandbox's ``Jail``, which performs it inside the sandbox's
own view of the file system, so a symlink planted by sandboxed code never reaches a host
file. Directory watching is not implemented and says so with ``unimplemented``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb
from protobuf.wkt import Timestamp

from sandboxd.envd.errors import connect_error
from sandboxd.envd.process import request_user
from sandboxd.jail import FsError

if TYPE_CHECKING:
    from connectrpc.request import RequestContext

    from sandboxd.jail import Entry, Jail

_FILE_TYPES = {
    "file": filesystem_pb.FileType.FILE,
    "dir": filesystem_pb.FileType.DIRECTORY,
    "symlink": filesystem_pb.FileType.SYMLINK,
}
_NO_WATCH = "sandboxd does not implement directory watching; list the directory again instead"


def entry_info(entry: Entry) -> filesystem_pb.EntryInfo:
    """The protobuf ``EntryInfo`` the SDK maps to its ``EntryInfo`` for a jail entry."""
    return filesystem_pb.EntryInfo(
        name=entry.name,
        type=_FILE_TYPES[entry.type],
        path=entry.path,
        size=entry.size,
        mode=entry.mode,
        permissions=entry.permissions,
        owner=entry.owner,
        group=entry.group,
        modified_time=Timestamp.from_datetime(entry.modified_time),
        symlink_target=entry.symlink_target,
        is_symlink=entry.type == "symlink",
    )


def check_user(ctx: RequestContext[Any, Any]) -> None:
    """File operations run as the sandbox's one account, ``user``; asking for another
    (``root``) is refused rather than silently ignored."""
    user = request_user(ctx)
    if user != "user":
        raise ConnectError(
            Code.PERMISSION_DENIED,
            f"file operations run as 'user' in a sandboxd sandbox, not {user!r}",
        )


class FilesystemService:
    """``filesystem.Filesystem`` for one sandbox."""

    def __init__(self, jail: Jail) -> None:
        self._jail = jail

    async def stat(
        self, request: filesystem_pb.StatRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.StatResponse:
        check_user(ctx)
        try:
            entry = await self._jail.stat(request.path)
        except FsError as error:
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
        except FsError as error:
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
        except FsError as error:
            raise connect_error(error) from None
        return filesystem_pb.MakeDirResponse(entry=entry_info(entry))

    async def move(
        self, request: filesystem_pb.MoveRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.MoveResponse:
        check_user(ctx)
        try:
            entry = await self._jail.move(request.source, request.destination)
        except FsError as error:
            raise connect_error(error) from None
        return filesystem_pb.MoveResponse(entry=entry_info(entry))

    async def remove(
        self, request: filesystem_pb.RemoveRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.RemoveResponse:
        check_user(ctx)
        try:
            await self._jail.remove(request.path)
        except FsError as error:
            raise connect_error(error) from None
        return filesystem_pb.RemoveResponse()

    def watch_dir(
        self, request: filesystem_pb.WatchDirRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[filesystem_pb.WatchDirResponse]:
        raise ConnectError(Code.UNIMPLEMENTED, _NO_WATCH)

    async def create_watcher(
        self, request: filesystem_pb.CreateWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.CreateWatcherResponse:
        raise ConnectError(Code.UNIMPLEMENTED, _NO_WATCH)

    async def get_watcher_events(
        self, request: filesystem_pb.GetWatcherEventsRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.GetWatcherEventsResponse:
        raise ConnectError(Code.UNIMPLEMENTED, _NO_WATCH)

    async def remove_watcher(
        self, request: filesystem_pb.RemoveWatcherRequest, ctx: RequestContext[Any, Any]
    ) -> filesystem_pb.RemoveWatcherResponse:
        raise ConnectError(Code.UNIMPLEMENTED, _NO_WATCH)
