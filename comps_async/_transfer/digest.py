"""The md5 of a download whose bytes may land in any order (concurrent ranges): hashed as the
bytes are written in order, and from disk for the spans that arrived early, as soon as what
precedes them is there — so verifying costs no second pass over a file written in order."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import anyio.to_thread

__all__ = ["InOrderDigest"]


class InOrderDigest:
    """The md5 of a file whose bytes may land in any order. Bytes written in order are hashed
    as they are written (``feed``); spans written out of order are recorded (``written``) and
    hashed from disk as soon as everything before them is there (``catch_up``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._hashed = 0
        self._pending: dict[int, int] = {}  # start -> end (exclusive) of spans not yet hashed
        self._lock: anyio.Lock | None = None

    def restart_at(self, offset: int) -> None:
        """A sequential transfer (re)starts at ``offset``: the bytes before it are on disk."""
        if offset < self._hashed:
            self._md5, self._hashed, self._pending = hashlib.md5(usedforsecurity=False), 0, {}
        if offset > self._hashed:
            self._pending[self._hashed] = offset

    def feed(self, data: bytes, at: int) -> None:
        """Blocking (called in the writing thread): ``data`` was written at ``at``."""
        if self._pending or at != self._hashed:
            self.written(at, at + len(data))
            return
        self._md5.update(data)
        self._hashed += len(data)

    def written(self, start: int, end: int) -> None:
        """``start..end`` is on disk but not hashed yet."""
        self._pending[start] = end

    async def catch_up(self) -> None:
        """Hash, from disk, every pending span that is now contiguous with what is hashed."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            await anyio.to_thread.run_sync(self._catch_up)

    def _catch_up(self) -> None:
        while self._hashed in self._pending:
            end = self._pending.pop(self._hashed)
            with open(self.path, "rb") as handle:
                handle.seek(self._hashed)
                remaining = end - self._hashed
                while remaining > 0:
                    block = handle.read(min(4 << 20, remaining))
                    if not block:
                        break
                    self._md5.update(block)
                    remaining -= len(block)
            self._hashed = end

    async def finish(self, size: int) -> str:
        """The md5 of the whole file (hashing whatever is left)."""
        if self._hashed < size:
            self.written(self._hashed, size)
            await self.catch_up()
        return self._md5.hexdigest()
