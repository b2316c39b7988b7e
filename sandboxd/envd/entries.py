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


def _valid_text(text: str) -> str:
    """`text` as protobuf can carry it: a file name that is not UTF-8 arrives with its bad
    bytes as lone surrogates (Python's surrogateescape), which protobuf refuses, failing the
    whole listing; each such byte becomes U+FFFD instead, so the rest of the listing works."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


def entry_info(entry: Entry) -> filesystem_pb.EntryInfo:
    """The protobuf ``EntryInfo`` the SDK maps to its ``EntryInfo``.

    As envd: a symlink has its target's type and the resolved target in ``symlink_target``
    (the SDK shows a link to a file as ``FileType.FILE`` with ``symlink_target`` set, which
    E2B's own tests expect). ``is_symlink`` stays unset: the SDK would then show
    ``FileType.SYMLINK`` instead, which those tests refuse.
    """
    return filesystem_pb.EntryInfo(
        name=_valid_text(entry.name),
        type=_FILE_TYPES[entry.type],
        path=_valid_text(entry.path),
        size=entry.size,
        mode=entry.mode,
        permissions=entry.permissions,
        owner=entry.owner,
        group=entry.group,
        modified_time=Timestamp.from_datetime(entry.modified_time),
        symlink_target=_valid_text(entry.symlink_target)
        if entry.symlink_target is not None
        else None,
    )
