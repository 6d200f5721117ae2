"""File content on the client side: checks before sending, media types, md5 of sources."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anyio

from ..models import ContentSource
from ..models.files import _AssetFile
from .fingerprints import Hasher

__all__ = ["check_readable_file", "ensure_md5s", "media_type", "read_source"]


_MEDIA_TYPES = {
    ".json": "application/json",
    ".xml": "application/xml",
    ".txt": "text/plain",
    ".csv": "text/plain",
}


def media_type(file_name: str) -> str:
    """Part Content-Type by extension, case-sensitively, exactly as pyCOMPS picks it
    (``os.path.splitext``, §7.2): a name that is only an extension (``.json``) has none."""
    return _MEDIA_TYPES.get(os.path.splitext(file_name)[1], "application/octet-stream")


def check_readable_file(path: Path) -> int:
    """Size of a regular, readable file; a clear error otherwise (before anything is sent)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"file {str(path)!r} does not exist") from None
    except OSError as exc:  # symlink loops, permissions on a parent
        raise OSError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a directory; pass files (or use create_from_dir)"
        )
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{str(path)!r} is not readable")
    return info.st_size


async def ensure_md5s(files: Sequence[_AssetFile], hasher: Hasher) -> None:
    """Fill in ``md5_checksum`` and ``length`` of path-backed files that lack them, hashing all of
    them in one worker-thread call."""
    todo = [f for f in files if f.md5_checksum is None]
    paths = []
    for file in todo:
        if file.source is None or file.source.path is None:
            raise ValueError(f"file {file.file_name!r} has neither content nor an md5")
        paths.append(file.source.path)
    if not todo:
        return
    for file, digest in zip(todo, await hasher.digest_many(paths), strict=True):
        file.md5_checksum = digest.md5
        file.length = digest.size


async def read_source(source: ContentSource) -> bytes:
    """All bytes of a (small) source."""
    if source.data is not None:
        return source.data
    assert source.path is not None
    return await anyio.Path(source.path).read_bytes()
