"""Jail entries as envd's protobuf ``EntryInfo`` (shared by the filesystem RPCs and watchers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from e2b.envd.filesystem import filesystem_pb
from protobuf.wkt import Timestamp

if TYPE_CHECKING:
    from sandboxd.jail import Entry

_FILE_TYPES = {
    "file": filesystem_pb.FileType.FILE,
    "dir": filesystem_pb.FileType.DIRECTORY,
    "symlink": filesystem_pb.FileType.SYMLINK,
}


def entry_info(entry: Entry) -> filesystem_pb.EntryInfo:
    """The protobuf ``EntryInfo`` the SDK maps to its ``EntryInfo``.

    A symlink is reported with ``is_symlink`` and type ``SYMLINK`` (its target is not
    followed: the jail lstats), which the SDK shows as ``FileType.SYMLINK``.
    """
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
