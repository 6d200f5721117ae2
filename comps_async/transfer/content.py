"""File content on the client side: md5 off the event loop, media types, reading sources."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from uuid import UUID

import anyio
import anyio.to_thread

from ..models import ContentSource
from ..models.files import _AssetFile

__all__ = ["HASH_BLOCK_BYTES", "ensure_md5", "hash_file", "media_type", "read_source"]

HASH_BLOCK_BYTES = 1024 * 1024
# md5 is CPU-bound in a worker thread; more threads than cores only add contention.
_HASH_LIMITER_SIZE = max(1, os.cpu_count() or 1)


def media_type(file_name: str) -> str:
    """Part Content-Type by extension, case-sensitively, as pyCOMPS does (§7.2)."""
    for suffix, kind in (
        (".json", "application/json"),
        (".xml", "application/xml"),
        (".txt", "text/plain"),
        (".csv", "text/plain"),
    ):
        if file_name.endswith(suffix):
            return kind
    return "application/octet-stream"


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


def _md5_of_path(path: Path) -> tuple[UUID, int]:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return UUID(digest.hexdigest()), size


async def hash_file(path: Path, limiter: anyio.CapacityLimiter | None = None) -> tuple[UUID, int]:
    """md5 (as COMPS's UUID form) and size of a file, computed in a worker thread."""
    return await anyio.to_thread.run_sync(_md5_of_path, path, limiter=limiter)


async def ensure_md5(file: _AssetFile, limiter: anyio.CapacityLimiter | None = None) -> UUID:
    """Fill in ``md5_checksum`` and ``length`` of a path-backed file; return the md5."""
    source = file.source
    if file.md5_checksum is not None:
        return file.md5_checksum
    if source is None or source.path is None:
        raise ValueError(f"file {file.file_name!r} has neither content nor an md5")
    md5, size = await hash_file(source.path, limiter)
    file.md5_checksum = md5
    file.length = size
    return md5


async def read_source(source: ContentSource) -> bytes:
    """All bytes of a (small) source."""
    if source.data is not None:
        return source.data
    assert source.path is not None
    return await anyio.Path(source.path).read_bytes()


def hash_limiter() -> anyio.CapacityLimiter:
    """A limiter of about one hashing thread per core."""
    return anyio.CapacityLimiter(_HASH_LIMITER_SIZE)
