"""md5 of local files, off the event loop, with a fingerprint cache that skips md5 on re-runs.

md5 is COMPS's asset id and is never replaced; xxh3 (several GB/s) only tells us whether a file
is byte-for-byte what it was when its md5 was computed. The cache maps (path, size, mtime_ns) to
(xxh3, md5): on a hit the file is still read once for xxh3, and md5 is reused only when xxh3
matches, so a file edited in place with its size and mtime restored is still re-hashed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import anyio
import anyio.to_thread
import xxhash

__all__ = ["FileDigest", "FingerprintCache", "Hasher", "default_cache_path"]

logger = logging.getLogger(__name__)

BLOCK_BYTES = 4 << 20  # hashed per call: the GIL is released for each block


def default_cache_path() -> Path:
    """``$XDG_CACHE_HOME/comps_async/fingerprints.sqlite3`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "comps_async" / "fingerprints.sqlite3"


@dataclass(frozen=True)
class FileDigest:
    """What hashing a file gave: its md5 (COMPS id), size, and whether md5 was computed."""

    md5: UUID
    size: int
    md5_computed: bool


class FingerprintCache:
    """A small sqlite table of (path, size, mtime_ns) -> (xxh3, md5). Thread-safe."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # A cache: losing the newest entries in a power cut only costs a re-hash, so commits
        # need not wait for the disk (thousands of files would otherwise cost seconds).
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS fingerprints (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, xxh3 TEXT, md5 TEXT)"
        )

    def lookup(self, path: str, size: int, mtime_ns: int) -> tuple[str, str] | None:
        """(xxh3, md5) recorded for this exact path, size and mtime."""
        with self._lock:
            row = self._conn.execute(
                "SELECT xxh3, md5 FROM fingerprints WHERE path = ? AND size = ? AND mtime_ns = ?",
                (path, size, mtime_ns),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def store(self, path: str, size: int, mtime_ns: int, xxh3: str, md5: str) -> None:
        """Record a file's fingerprints."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO fingerprints VALUES (?,?,?,?,?)",
                (path, size, mtime_ns, xxh3, md5),
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()


def _blocks(path: Path) -> Iterator[memoryview]:
    """The file's bytes in blocks, read into one buffer sized for the file (no allocation per
    block, and small files do not pay for a large buffer)."""
    with open(path, "rb", buffering=0) as handle:
        size = os.fstat(handle.fileno()).st_size
        buffer = bytearray(max(1, min(BLOCK_BYTES, size)))
        view = memoryview(buffer)
        while count := handle.readinto(buffer):
            yield view[:count]


def _digest(path: Path, cache: FingerprintCache | None) -> FileDigest:
    """Blocking: md5 of ``path``, reusing the cache when xxh3 proves the content unchanged."""
    info = path.stat()
    key = (os.path.abspath(path), info.st_size, info.st_mtime_ns)
    known = cache.lookup(*key) if cache is not None else None
    xxh = xxhash.xxh3_128()
    md5 = None if known else hashlib.md5(usedforsecurity=False)
    size = 0
    for block in _blocks(path):
        xxh.update(block)
        if md5 is not None:
            md5.update(block)
        size += len(block)
        block.release()
    if known is not None and known[0] == xxh.hexdigest() and size == info.st_size:
        return FileDigest(UUID(known[1]), size, md5_computed=False)
    if md5 is None:  # same size and mtime, different bytes: edited in place; hash it again
        logger.info("%s changed without a new mtime; computing its md5 again", path)
        md5 = hashlib.md5(usedforsecurity=False)
        for block in _blocks(path):
            md5.update(block)
            block.release()
    if cache is not None:
        cache.store(*key, xxh.hexdigest(), md5.hexdigest())
    return FileDigest(UUID(md5.hexdigest()), size, md5_computed=True)


class Hasher:
    """Hashes files in worker threads, about one per core at a time, through the cache."""

    def __init__(self, cache: FingerprintCache | None) -> None:
        self.cache = cache
        self._limiter: anyio.CapacityLimiter | None = None

    async def digest(self, path: Path) -> FileDigest:
        """md5 and size of ``path`` (never on the event loop)."""
        return (await self.digest_many([path]))[0]

    async def digest_many(self, paths: list[Path]) -> list[FileDigest]:
        """md5 and size of several files in one worker-thread call: for many small files the
        hop to a thread, not the hashing, would otherwise be the cost."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
        cache = self.cache
        return await anyio.to_thread.run_sync(
            lambda: [_digest(path, cache) for path in paths], limiter=self._limiter
        )
