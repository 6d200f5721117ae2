"""Content-addressed blob store keyed by md5, with resumable partial uploads (protocol §8.4).

Blocking file I/O; the app calls it from worker threads. Every write goes to a temporary name
and is renamed into place only after its md5 was verified, so a blob on disk is always whole.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

__all__ = ["BlobStore", "Md5MismatchError", "RangeWriter", "UploadRangeError"]

_BLOCK = 1024 * 1024


class Md5MismatchError(ValueError):
    """The bytes received do not hash to the md5 they were sent under."""


class UploadRangeError(ValueError):
    """A chunk that does not fit its upload: a gap, or a length unlike its Content-Range."""


class BlobStore:
    """Blobs live at ``root/ab/<md5hex>``; partial uploads at ``root/partial/<md5hex>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._partial = root / "partial"
        for directory in (self.root, self._partial):
            directory.mkdir(parents=True, exist_ok=True)
        # md5 state of uploads arriving in order: md5 -> (hash so far, bytes hashed)
        self._running: dict[UUID, tuple[Any, int]] = {}
        # uploads with an in-order chunk arriving: md5 -> where that chunk starts
        self._appending: dict[UUID, int] = {}
        self._upload_locks: dict[UUID, threading.Lock] = {}
        self._lock = threading.Lock()
        self._shards: set[Path] = set()

    def path(self, md5: UUID) -> Path:
        """Where the blob with this md5 lives (whether or not it exists)."""
        return self.root / md5.hex[:2] / md5.hex

    def exists(self, md5: UUID) -> bool:
        """Whether the blob is stored completely."""
        return self.path(md5).is_file()

    def size(self, md5: UUID) -> int:
        """Length of a stored blob."""
        return self.path(md5).stat().st_size

    def put(self, md5: UUID, pieces: Sequence[bytes | memoryview]) -> int:
        """Store content held in memory after verifying its md5; returns its length. Content
        already stored is only verified (dedup), never written twice."""
        content = b"".join(pieces)  # one md5 call and one write: see RangeWriter.hash
        actual = UUID(hashlib.md5(content, usedforsecurity=False).hexdigest())
        if actual != md5:
            raise Md5MismatchError(f"content sent as {md5} has md5 {actual}")
        target = self.path(md5)
        if not target.is_file():
            tmp = self._shard(md5) / f".{md5.hex}.{uuid4().hex}.tmp"
            try:
                with open(tmp, "xb") as out:
                    out.write(content)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return len(content)

    def _shard(self, md5: UUID) -> Path:
        """The blob's directory, created once. Temporary files are written beside their
        blob: renaming within one directory is cheapest, and writers of different blobs do
        not contend for one directory's lock."""
        shard = self.root / md5.hex[:2]
        if shard not in self._shards:
            shard.mkdir(exist_ok=True)
            self._shards.add(shard)
        return shard

    # --- partial uploads (§8.4) ----------------------------------------------------------------

    def partial_path(self, md5: UUID) -> Path:
        """Where an unfinished upload's bytes are kept."""
        return self._partial / md5.hex

    def partial_size(self, md5: UUID) -> int | None:
        """Bytes received from the start, without a hole, for an unfinished upload, or None."""
        part = self.partial_path(md5)
        if not part.is_file():
            return None
        if self._ranges_file(md5).exists():
            return _prefix(self._ranges(md5))
        # In order, the file's size is what was received, less a chunk still arriving.
        size = part.stat().st_size
        return min(size, self._appending.get(md5, size))

    def begin_range(
        self, md5: UUID, start: int, end: int, total: int, *, allow_gaps: bool = False
    ) -> RangeWriter:
        """Start receiving bytes ``start`` to ``end`` (exclusive) of an upload of ``total``
        bytes. A range that starts beyond what was received is a gap: refused unless
        ``allow_gaps`` (out-of-order chunks; the received ranges are then recorded beside the
        partial file). Re-sending a received range is harmless."""
        if not 0 <= start < end <= total:
            raise UploadRangeError(f"invalid range {start}-{end - 1}/{total}")
        with self._upload_lock(md5):
            have = self.partial_size(md5) or 0
            if start > have and not allow_gaps:
                raise UploadRangeError(
                    f"gap: {have} bytes received, chunk starts at {start}; resume from "
                    "GET /api/upload/check"
                )
            recorded = self._ranges_file(md5).exists()
            appending = start == have and not recorded and md5 not in self._appending
            if appending:
                self._appending[md5] = start
            elif end > have and not recorded:
                # The file's size stands for what was received only while one chunk at a time
                # extends it in order; from the first gap (or a chunk that overlaps one still
                # arriving) on, the received ranges are recorded instead.
                self._write_ranges(md5, [(0, have)])
            running = self._running.get(md5)
            if appending and start == 0:
                running = (hashlib.md5(usedforsecurity=False), 0)
            elif appending and running is not None and running[1] == start:
                del self._running[md5]  # this chunk takes the upload's md5 along
            else:
                running = None  # the upload will be hashed from its file once complete
        return RangeWriter(self, md5, (start, end, total), have, appending, running)

    def _finish_range(self, writer: RangeWriter) -> bool:
        """Record a fully received range; publish the blob if the upload is now complete and
        its md5 right. Returns whether it was published."""
        md5 = writer.md5
        part = self.partial_path(md5)
        with self._upload_lock(md5):
            if writer.appending:
                del self._appending[md5]
            if writer.running is not None:
                self._running[md5] = (writer.running[0], writer.end)
            ranges = self._record(md5, writer.start, writer.end, writer.had)
            if _prefix(ranges) < writer.total:
                return False
            running = self._running.pop(md5, None)
            if running is None or running[1] != writer.total:
                digest = hashlib.md5(usedforsecurity=False)
                for block in _read_blocks(part):
                    digest.update(block)
            else:
                digest = running[0]
            actual = UUID(digest.hexdigest())
            if actual != md5:
                self._discard(md5, part)
                raise Md5MismatchError(f"content uploaded as {md5} has md5 {actual}")
            self._shard(md5)
            os.replace(part, self.path(md5))
            self._ranges_file(md5).unlink(missing_ok=True)
        with self._lock:
            self._upload_locks.pop(md5, None)
        return True

    def _abandon_range(self, writer: RangeWriter) -> None:
        """Forget a range that was not fully received: an in-order chunk is cut off again and
        the md5 it took along put back, so the upload resumes exactly where it was."""
        with self._upload_lock(writer.md5):
            if writer.appending:
                del self._appending[writer.md5]
                part = self.partial_path(writer.md5)
                # Once ranges are recorded, the record, not the size, says what was received.
                if self._ranges_file(writer.md5).exists():
                    pass
                elif writer.start == 0:
                    part.unlink(missing_ok=True)
                elif part.exists():
                    os.truncate(part, writer.start)
            if writer.resumed is not None:
                self._running[writer.md5] = writer.resumed

    def _upload_lock(self, md5: UUID) -> threading.Lock:
        """The lock of one upload's bookkeeping (held within one call, never across waits)."""
        with self._lock:
            return self._upload_locks.setdefault(md5, threading.Lock())

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
        self._write_ranges(md5, ranges)
        return ranges

    def _write_ranges(self, md5: UUID, ranges: list[tuple[int, int]]) -> None:
        self._ranges_file(md5).write_text("".join(f"{a} {b}\n" for a, b in ranges))

    def _discard(self, md5: UUID, part: Path) -> None:
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


class RangeWriter:
    """One Content-Range chunk, written as its bytes arrive. Blocking methods, called from
    worker threads one after another. Bytes that extend the upload in order are hashed on the
    way, so completing an upload costs no re-read."""

    def __init__(
        self,
        store: BlobStore,
        md5: UUID,
        span: tuple[int, int, int],
        had: int,
        appending: bool,
        running: tuple[Any, int] | None,
    ) -> None:
        self.md5 = md5
        self.start, self.end, self.total = span
        self.had = had  # bytes received before this chunk
        self.appending = appending
        # Put back if the chunk is abandoned; the chunk hashes into a copy meanwhile.
        self.resumed = running if running is not None and running[1] else None
        self.running = None if running is None else (running[0].copy(), running[1])
        self.position = self.start
        self._store = store
        self._fd: int | None = os.open(store.partial_path(md5), os.O_WRONLY | os.O_CREAT, 0o600)
        self._inode = os.fstat(self._fd).st_ino

    def write(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Write the next bytes of the range (``hash`` them too, in another thread at the same
        time: on one stream, writing to the page cache and md5 would otherwise take turns)."""
        assert self._fd is not None
        size = sum(len(piece) for piece in pieces)
        if self.position + size > self.end:
            raise UploadRangeError("chunk is longer than its Content-Range")
        with self._store._upload_lock(self.md5):
            # Another chunk may have completed (and published) or discarded the upload
            # meanwhile; the file this one opened must then not be touched.
            try:
                current = os.stat(self._store.partial_path(self.md5)).st_ino
            except FileNotFoundError:
                current = None
            if current != self._inode:
                raise UploadRangeError("the upload was completed or discarded meanwhile")
            pwrite_all(self._fd, pieces, self.position)
        self.position += size

    def hash(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Feed the next bytes of the range to the upload's running md5 (if it has one)."""
        if self.running is not None:
            # One update per block: md5 releases the GIL per call, and thousands of small
            # calls would queue behind the event loop thread for it.
            self.running[0].update(b"".join(pieces))

    def finish(self) -> bool:
        """The range is complete: record it; True when the whole upload is verified and
        published (an md5 mismatch discards the upload)."""
        if self.position != self.end:
            raise UploadRangeError("chunk is shorter than its Content-Range")
        self._close()
        return self._store._finish_range(self)

    def abandon(self) -> None:
        """The range will not be completed (bad length, lost connection): undo it."""
        if self._fd is not None:
            self._close()
            self._store._abandon_range(self)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# The local server is a component of its own: it imports only the SDK's public wire models, so
# this small helper is its own copy of transfer/fileio.py's.
def pwrite_all(fd: int, pieces: Sequence[bytes | memoryview], offset: int) -> int:
    """Write ``pieces`` at ``offset`` with vectored writes (the pieces go to the page cache
    without being joined into one buffer first); returns the bytes written."""
    views = [memoryview(piece) for piece in pieces]
    position = offset
    while views:
        written = os.pwritev(fd, views[:1024], position)  # at most IOV_MAX buffers per call
        position += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return position - offset
