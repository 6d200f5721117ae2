"""Content-addressed blob store keyed by md5, with resumable partial uploads (protocol §8.4).

Blocking file I/O; the app calls it from worker threads. Every write goes to a temporary name
and is renamed into place only after its md5 was verified, so a blob on disk is always whole.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

__all__ = ["BlobStore", "Md5MismatchError"]

_BLOCK = 1024 * 1024


class Md5MismatchError(ValueError):
    """The bytes received do not hash to the md5 they were sent under."""


class BlobStore:
    """Blobs live at ``root/ab/<md5hex>``; partial uploads at ``root/partial/<md5hex>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._partial = root / "partial"
        self._tmp = root / "tmp"
        for directory in (self.root, self._partial, self._tmp):
            directory.mkdir(parents=True, exist_ok=True)
        # md5 state of uploads arriving in order: md5 -> (hash so far, bytes hashed)
        self._running: dict[UUID, tuple[Any, int]] = {}
        self._upload_locks: dict[UUID, threading.Lock] = {}
        self._lock = threading.Lock()

    def path(self, md5: UUID) -> Path:
        """Where the blob with this md5 lives (whether or not it exists)."""
        return self.root / md5.hex[:2] / md5.hex

    def exists(self, md5: UUID) -> bool:
        """Whether the blob is stored completely."""
        return self.path(md5).is_file()

    def size(self, md5: UUID) -> int:
        """Length of a stored blob."""
        return self.path(md5).stat().st_size

    def put_chunks(self, md5: UUID, chunks: Iterable[bytes]) -> int:
        """Store content given as chunks after verifying its md5; returns its length. Content
        already stored is only verified (dedup), never written twice."""
        target = self.path(md5)
        exists = target.is_file()
        digest = hashlib.md5(usedforsecurity=False)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        length = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    length += len(chunk)
                    if not exists:
                        out.write(chunk)
            actual = UUID(digest.hexdigest())
            if actual != md5:
                raise Md5MismatchError(f"content sent as {md5} has md5 {actual}")
            if not exists:
                self._publish(Path(tmp_name), target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return length

    def _publish(self, tmp: Path, target: Path) -> None:
        target.parent.mkdir(exist_ok=True)
        os.replace(tmp, target)

    # --- partial uploads (§8.4) ----------------------------------------------------------------

    def partial_size(self, md5: UUID) -> int | None:
        """Bytes received from the start, without a hole, for an unfinished upload, or None."""
        part = self._partial / md5.hex
        if not part.is_file():
            return None
        return (
            _prefix(self._ranges(md5)) if self._ranges_file(md5).exists() else part.stat().st_size
        )

    def write_range(
        self,
        md5: UUID,
        start: int,
        chunks: Iterable[bytes],
        total: int,
        *,
        allow_gaps: bool = False,
    ) -> bool:
        """Write bytes at ``start`` of an upload of ``total`` bytes. A range that starts beyond
        what was received is a gap: refused unless ``allow_gaps`` (out-of-order chunks; the
        received ranges are then recorded beside the partial file). Re-sending a received range
        is harmless. Returns True when the upload is complete, verified and published.

        Bytes that extend the upload in order are hashed as they arrive, so the last chunk
        costs no re-read; the finished file is renamed into the store, not copied. Otherwise
        (after a restart, an overlap or out-of-order chunks) the hash is computed at the end."""
        with self._lock:
            upload_lock = self._upload_locks.setdefault(md5, threading.Lock())
        with upload_lock:  # chunks of one upload may arrive at once; they are written in turn
            return self._write_range(md5, start, chunks, total, allow_gaps)

    def _write_range(
        self, md5: UUID, start: int, chunks: Iterable[bytes], total: int, allow_gaps: bool
    ) -> bool:
        part = self._partial / md5.hex
        have = self.partial_size(md5) or 0
        if start > have and not allow_gaps:
            raise ValueError(f"gap: upload of {md5} has {have} bytes, range starts at {start}")
        with self._lock:
            running = self._running.get(md5)
        in_order = (running is not None and running[1] == start == have) or (start == have == 0)
        digest = (
            running[0] if running is not None and in_order else hashlib.md5(usedforsecurity=False)
        )
        written = 0
        with open(part, "r+b" if part.exists() else "wb") as out:
            out.seek(start)
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
                if in_order:
                    digest.update(chunk)
        end = start + written
        if end > total:
            self._discard(md5, part)
            raise ValueError(f"upload of {md5} exceeds its declared total of {total} bytes")
        with self._lock:
            if in_order:
                self._running[md5] = (digest, end)
            else:
                self._running.pop(md5, None)
        ranges = self._record(md5, start, end, have)
        if _prefix(ranges) < total:
            return False
        with self._lock:
            running = self._running.pop(md5, None)
        if running is None or running[1] != total:
            digest = hashlib.md5(usedforsecurity=False)
            for block in _read_blocks(part):
                digest.update(block)
        else:
            digest = running[0]
        actual = UUID(digest.hexdigest())
        if actual != md5:
            self._discard(md5, part)
            raise Md5MismatchError(f"content uploaded as {md5} has md5 {actual}")
        self._publish(part, self.path(md5))
        self._ranges_file(md5).unlink(missing_ok=True)
        with self._lock:
            self._upload_locks.pop(md5, None)
        return True

    def _ranges_file(self, md5: UUID) -> Path:
        return self._partial / f"{md5.hex}.ranges"

    def _ranges(self, md5: UUID) -> list[tuple[int, int]]:
        lines = self._ranges_file(md5).read_text().split("\n")
        return [(int(a), int(b)) for a, b in (line.split() for line in lines if line.strip())]

    def _record(self, md5: UUID, start: int, end: int, have: int) -> list[tuple[int, int]]:
        """Received ranges after this write. In-order uploads need no record (the file size is
        the received prefix); the first out-of-order range starts one."""
        record = self._ranges_file(md5)
        if not record.exists() and start <= have:
            return [(0, max(have, end))]
        ranges = self._ranges(md5) if record.exists() else [(0, have)]
        ranges.append((start, end))
        record.write_text("".join(f"{a} {b}\n" for a, b in ranges))
        return ranges

    def _discard(self, md5: UUID, part: Path) -> None:
        with self._lock:
            self._running.pop(md5, None)
        part.unlink(missing_ok=True)
        self._ranges_file(md5).unlink(missing_ok=True)


def _prefix(ranges: list[tuple[int, int]]) -> int:
    """How far from 0 the ranges cover without a hole."""
    covered = 0
    for start, end in sorted(ranges):
        if start > covered:
            break
        covered = max(covered, end)
    return covered


def _read_blocks(path: Path) -> Iterable[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            yield block
