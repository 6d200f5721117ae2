"""Downloads to disk: streamed in large blocks, resumable, split into concurrent ranges when big,
verified by length and md5, published by rename; and the path rules that keep server-provided
names inside the destination directory.

Scratch files never share a folder with outputs: they live in ``<dest>/.comps-partial/``, named by
a hash of the target's path, length and md5, so no output name (``X.part`` included) can collide
with one and a resumed transfer only ever continues the same listed file. They are created
exclusively and opened without following links, so a link planted in the destination cannot
redirect a write, and a publish re-checks what it replaces. No output may be written into the
scratch folder itself.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import zipfile
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread
import httpx

from .._concurrency import AdaptiveLimit, deadline, first_error
from .._failures import Attempts, Failure, classify
from ..errors import (
    RESUMES,
    ChecksumMismatchError,
    CompsError,
    TransferError,
)
from .fileio import pwrite_all

if TYPE_CHECKING:
    from .._requester import Requester

__all__ = [
    "DownloadSettings",
    "Downloader",
    "UnsafePathError",
    "ensure_inside",
    "extract_zip_safely",
    "safe_join",
    "scratch_path",
]

logger = logging.getLogger(__name__)

_DRIVE = re.compile(r"^[A-Za-z]:")
SCRATCH_DIR = ".comps-partial"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; Windows has no symlink writes to follow


class UnsafePathError(CompsError, ValueError):
    """A server-provided path would land outside the destination directory (or onto the SDK's
    scratch space in it); nothing was written there."""


def safe_join(root: Path, relative: str) -> Path:
    """``root/relative`` for a server-provided ``relative`` path, refusing absolute paths, drive
    letters, ``..`` and anything else that leaves ``root`` (zip-slip, hostile listings). Pure
    string work, safe on the event loop; ``ensure_inside`` adds the symlink check on disk."""
    text = relative.replace("\\", "/")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or text.startswith("/") or _DRIVE.match(text) or ".." in parts or "\x00" in text:
        raise UnsafePathError(f"refusing to write {relative!r}: it leaves the destination")
    if parts[0].casefold() == SCRATCH_DIR:
        raise UnsafePathError(f"refusing to write {relative!r}: {SCRATCH_DIR} is the SDK's")
    return root.joinpath(*parts)


def ensure_inside(root: Path, target: Path) -> None:
    """Blocking: refuse ``target`` if, through symlinks already on disk, it lands outside
    ``root``."""
    resolved_root = root.resolve()
    resolved = target.resolve()
    if not resolved.is_relative_to(resolved_root) or resolved == resolved_root:
        raise UnsafePathError(f"refusing to write {str(target)!r}: it leaves the destination")


def extract_zip_safely(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip, refusing members whose names leave ``dest`` (blocking; run in a thread)."""
    written = []
    with zipfile.ZipFile(archive) as zipped:
        members = [
            (info, _checked(dest, info.filename)) for info in zipped.infolist() if not info.is_dir()
        ]  # check every name before writing anything
        for info, target in members:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, open(target, "wb") as out:
                while block := source.read(1 << 20):
                    out.write(block)
            written.append(target)
    return written


def _checked(root: Path, relative: str) -> Path:
    target = safe_join(root, relative)
    ensure_inside(root, target)
    return target


@dataclass(frozen=True)
class DownloadSettings:
    """Knobs of the download engine (docs/howto/concurrency.md)."""

    # Bytes gathered per disk write (one thread hop): small for the many streams of a harvest,
    # so memory stays ~ streams x block; larger for the few range streams of one big file.
    block_bytes: int = 256 << 10
    range_block_bytes: int = 1 << 20
    range_bytes: int = 16 << 20  # big files are fetched as 16 MiB ranges ...
    parallel_threshold_bytes: int = 64 << 20  # ... when they are at least 64 MiB
    # Streams in flight session-wide follow the throughput they reach (AdaptiveLimit): from
    # initial_streams, up to streams, which bounds memory (<= streams x block_bytes).
    streams: int = 64
    initial_streams: int = 32
    # Ranges of one big file in flight, likewise adaptive: from ranges_per_file up to
    # max_ranges_per_file (one big file never takes every stream). A link capped per
    # connection gets enough ranges to fill it; a fast one keeps few (each pays the latency).
    ranges_per_file: int = 4
    max_ranges_per_file: int = 32
    max_attempts: int = 6  # per file or range; each resumes from the bytes already on disk
    stall_timeout_s: float = 60.0  # no byte for this long: the attempt fails (and resumes)
    deadline_s: float | None = None  # one file, every attempt included; None: no deadline


@dataclass
class Downloader:
    """The session-wide download engine; ``streams`` bounds bytes in flight for every caller."""

    requester: Requester
    settings: DownloadSettings
    streams: AdaptiveLimit = field(init=False)

    def __post_init__(self) -> None:
        most = self.settings.streams
        self.streams = AdaptiveLimit(min(self.settings.initial_streams, most), most)

    async def fetch(
        self,
        url: str,
        target: Path,
        *,
        length: int | None,
        md5_hex: str | None = None,
        overwrite: bool = False,
        inside: Path | None = None,
        deadline_s: float | None = None,
    ) -> bool:
        """Download ``url`` to ``target``; returns False when a complete file was already
        there. An interrupted transfer leaves its scratch file for the next call to resume.
        The md5 is computed while the bytes arrive, so verifying costs no second pass; nothing
        past the listed ``length`` is read. ``inside`` (default: the target's folder) is the
        destination root: nothing is written outside it, whatever links are on disk. The whole
        call ends within ``deadline_s`` (default ``settings.deadline_s``) with
        ``DeadlineExceededError``."""
        root = inside if inside is not None else target.parent
        seconds = deadline_s if deadline_s is not None else self.settings.deadline_s
        with deadline(seconds, f"the download of {target.name}", url):
            return await self._fetch(url, target, root, length, md5_hex, overwrite)

    async def _fetch(
        self,
        url: str,
        target: Path,
        root: Path,
        length: int | None,
        md5_hex: str | None,
        overwrite: bool,
    ) -> bool:
        part = scratch_path(root, target, length, md5_hex)
        # File-system bookkeeping is batched into one worker-thread call before and one after
        # the transfer: for small files the hops, not the bytes, would be the cost.
        have = await anyio.to_thread.run_sync(_prepare, target, part, length, overwrite, root)
        if have is None:
            return False
        digest = _InOrderDigest(part)
        if length is not None and length >= self.settings.parallel_threshold_bytes:
            try:
                await self._ranges(url, part, length, digest)
            except _RangeIgnored:  # a server or proxy that answers 200: one stream, verified
                logger.info("%s: Range ignored by the server; fetching it as one stream", url)
                await anyio.to_thread.run_sync(_discard, part)
                digest = _InOrderDigest(part)
                await self._sequential(url, part, length, digest, 0)
        elif length == 0:  # an empty file (most stderr.txt) needs no request at all
            await anyio.to_thread.run_sync(_create_empty, part)
        else:
            try:
                await self._sequential(url, part, length, digest, have)
            except _NotTheListedFile as wrong:
                raise ChecksumMismatchError(
                    f"{target.name}: length the server declared",
                    expected=str(length),
                    actual=str(wrong.declared),
                ) from None
        size = await anyio.to_thread.run_sync(_size, part)
        if length is not None and size != length:
            raise ChecksumMismatchError(
                f"{target.name}: length", expected=str(length), actual=str(size)
            )
        if md5_hex:
            actual = await digest.finish(size)
            if actual != md5_hex.replace("-", "").lower():
                # The bytes are wrong, not missing: resuming them would keep them wrong.
                await anyio.to_thread.run_sync(_discard, part)
                raise ChecksumMismatchError(f"{target.name}: md5", expected=md5_hex, actual=actual)
        await anyio.to_thread.run_sync(_publish, part, target)
        return True

    def _get(
        self, url: str, headers: dict[str, str] | None
    ) -> AbstractAsyncContextManager[httpx.Response]:
        # The engine retries (and resumes) itself: one attempt per call through the pipeline,
        # so retries never stack; a stall ends the attempt, not the download.
        base = self.requester.timeout
        timeout = httpx.Timeout(
            connect=base.connect,
            read=self.settings.stall_timeout_s,
            write=base.write,
            pool=base.pool,
        )
        return self.requester.stream("GET", url, headers=headers, timeout=timeout, max_attempts=1)

    async def _sequential(
        self, url: str, part: Path, length: int | None, digest: _InOrderDigest, have: int
    ) -> None:
        attempts = Attempts(self.requester.retry, self.settings.max_attempts)
        async for attempt in attempts:
            if attempt > 1:
                have = await anyio.to_thread.run_sync(_size, part)
            if length is not None and have >= length:
                return
            headers = {"Range": f"bytes={have}-"} if have else None
            try:
                async with self.streams.limiter, self._get(url, headers) as resp:
                    if have and resp.status_code != 206:  # range ignored: start again
                        have = 0
                    declared = _declared_total(resp, have)
                    if length is not None and declared is not None and declared != length:
                        raise _NotTheListedFile(declared)  # before a byte is written
                    digest.restart_at(have)
                    await self._write_stream(
                        resp,
                        part,
                        mode="ab" if have else "wb",
                        offset=have,
                        digest=digest,
                        limit=length,
                        measure=(self.streams,),
                    )
                return
            except Exception as exc:
                if classify(exc) is Failure.DEFINITE:
                    raise
                attempts.failed(exc)  # the next attempt resumes from what is on disk
        raise TransferError(
            f"download failed after {self.settings.max_attempts} attempts: {attempts.last}",
            url=url,
            hint=RESUMES,  # the scratch file keeps what arrived
        )

    async def _write_stream(
        self,
        response: httpx.Response,
        part: Path,
        *,
        mode: Literal["wb", "ab", "r+b"],
        offset: int = 0,
        digest: _InOrderDigest | None = None,
        limit: int | None = None,
        measure: tuple[AdaptiveLimit, ...] = (),
    ) -> None:
        """Copy the body into ``part`` (``wb`` fresh, ``ab`` resume, ``r+b`` a range at
        ``offset``), one block per thread hop, never past byte ``limit`` (a server that sends
        more, or drips for ever, is cut there); with ``digest``, the bytes are hashed in that
        same hop. The bytes count towards each limit in ``measure``."""
        block = self.settings.range_block_bytes if mode == "r+b" else self.settings.block_bytes
        pieces: list[bytes] = []
        pending = 0
        fd = await anyio.to_thread.run_sync(_open_for, part, mode)
        position = offset

        def write(batch: list[bytes], at: int) -> None:
            pwrite_all(fd, batch, at)
            if digest is not None:
                for piece in batch:
                    digest.feed(piece, at)
                    at += len(piece)

        try:
            async for chunk in response.aiter_bytes():
                if limit is not None and position + pending + len(chunk) >= limit:
                    pieces.append(chunk[: limit - position - pending])
                    pending = limit - position
                    break  # what follows is not the listed file
                pieces.append(chunk)
                pending += len(chunk)
                for adaptive in measure:
                    adaptive.moved(len(chunk))
                if pending >= block:
                    batch, pieces = pieces, []
                    await anyio.to_thread.run_sync(write, batch, position)
                    position += pending
                    pending = 0
        finally:
            # Bytes received before a broken connection are good: keep them for resuming.
            def finish() -> None:
                try:
                    if pieces:
                        write(pieces, position)
                finally:
                    os.close(fd)

            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(finish)

    async def _ranges(self, url: str, part: Path, length: int, digest: _InOrderDigest) -> None:
        size = self.settings.range_bytes
        spans = [(start, min(start + size, length) - 1) for start in range(0, length, size)]
        done = await anyio.to_thread.run_sync(_start_ranges, part, length)
        for index in done:
            digest.written(spans[index][0], spans[index][1] + 1)
        lock = anyio.Lock()
        first = self.settings.ranges_per_file
        per_file = AdaptiveLimit(first, max(first, self.settings.max_ranges_per_file))

        async def fetch_span(index: int) -> None:
            start, end = spans[index]
            attempts = Attempts(self.requester.retry, self.settings.max_attempts)
            async for _ in attempts:
                try:
                    async with (
                        per_file.limiter,
                        self.streams.limiter,
                        self._get(url, {"Range": f"bytes={start}-{end}"}) as resp,
                    ):
                        if resp.status_code != 206:
                            raise _RangeIgnored(url)
                        await self._write_stream(
                            resp,
                            part,
                            mode="r+b",
                            offset=start,
                            limit=end + 1,
                            measure=(per_file, self.streams),
                        )
                    # Record progress so that an interrupted download can resume, and hash
                    # whatever is now contiguous from the start while other ranges arrive.
                    async with lock:
                        await anyio.to_thread.run_sync(_record_range, part, index)
                    digest.written(start, end + 1)
                    await digest.catch_up()
                    return
                except Exception as exc:
                    if classify(exc) is Failure.DEFINITE:
                        raise
                    attempts.failed(exc)
            raise TransferError(
                f"range {start}-{end} failed: {attempts.last}", url=url, hint=RESUMES
            )

        try:
            async with anyio.create_task_group() as tg:
                for index in range(len(spans)):
                    if index not in done:
                        tg.start_soon(fetch_span, index)
        except BaseExceptionGroup as group:
            raise first_error(group) from None


class _RangeIgnored(Exception):
    """Internal: a ranged GET was answered with the whole file (200)."""


class _NotTheListedFile(Exception):
    """The answer declares a size other than the listing's: not the listed file (a server that
    would stream 10^12 bytes for a 10-byte file), refused before anything is written."""

    def __init__(self, declared: int) -> None:
        super().__init__(declared)
        self.declared = declared


def _declared_total(response: httpx.Response, have: int) -> int | None:
    """The whole file's size as the answer declares it (Content-Range's total, else
    Content-Length plus what a ranged answer skips), or None if it declares none."""
    content_range = response.headers.get("Content-Range", "")
    total = content_range.rpartition("/")[2].strip()
    if response.status_code == 206 and total.isdigit():
        return int(total)
    declared = response.headers.get("Content-Length", "")
    if not declared.strip().isdigit():
        return None
    return int(declared) + (have if response.status_code == 206 else 0)


class _InOrderDigest:
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


def scratch_path(root: Path, target: Path, length: int | None, md5_hex: str | None) -> Path:
    """Where the bytes of ``target`` gather until they are verified: in the destination's
    scratch folder, named by the target's path, length and md5 (a changed listing never resumes
    the old bytes)."""
    relative = target.relative_to(root).as_posix() if target.is_relative_to(root) else str(target)
    name = hashlib.sha256(f"{relative}\0{length}\0{md5_hex}".encode()).hexdigest()[:40]
    return root / SCRATCH_DIR / f"{name}.part"


def _done_file(part: Path) -> Path:
    return part.with_name(part.name + ".ranges")


def _prepare(
    target: Path, part: Path, length: int | None, overwrite: bool, root: Path
) -> int | None:
    """Blocking: None when a complete ``target`` is already there; otherwise make its folder
    and the scratch folder, and return how many bytes of ``part`` a resumed transfer can keep
    (0 to start afresh)."""
    ensure_inside(root, target)
    if not overwrite and length is not None:
        try:
            info = target.lstat()
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(info.st_mode) and info.st_size == length:
                return None
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = part.parent
    with suppress(FileExistsError):
        scratch.mkdir(mode=0o700)
    if not stat.S_ISDIR(scratch.lstat().st_mode):  # a link or a file planted in its place
        raise UnsafePathError(f"refusing to write: {str(scratch)!r} is not a plain directory")
    if overwrite:
        _discard(part)
    try:
        info = part.lstat()
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(info.st_mode) or (length is not None and info.st_size > length):
        _discard(part)  # not ours, or longer than the file: nothing in it can be kept
        return 0
    return info.st_size


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)  # unlink never follows a link
    _done_file(part).unlink(missing_ok=True)


def _publish(part: Path, target: Path) -> None:
    """Move the verified scratch file into place. A directory at the target is refused; a link
    there is replaced, never followed."""
    try:
        if stat.S_ISDIR(target.lstat().st_mode):
            raise UnsafePathError(f"refusing to replace the directory {str(target)!r}")
    except FileNotFoundError:
        pass
    os.replace(part, target)
    _done_file(part).unlink(missing_ok=True)


def _open_for(path: Path, mode: str) -> int:
    """A raw file descriptor for ``wb`` (a new file, created exclusively), ``ab`` or ``r+b``
    (the existing scratch file) writes at explicit offsets; never through a link."""
    flags = os.O_WRONLY | _NOFOLLOW
    if mode == "wb":
        path.unlink(missing_ok=True)
        flags |= os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"refusing to write {str(path)!r}: not a regular file")
    return fd


def _create_empty(part: Path) -> None:
    os.close(_open_for(part, "wb"))


def _start_ranges(part: Path, length: int) -> set[int]:
    """Blocking: the ranges already on disk of an interrupted ranged download, or a fresh
    preallocated scratch file and an empty record."""
    done_file = _done_file(part)
    try:
        fd = os.open(done_file, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        pass
    else:
        with os.fdopen(fd) as handle:
            if _size(part) == length:
                return {int(x) for x in handle.read().split()}
    fd = _open_for(part, "wb")
    try:
        os.ftruncate(fd, length)
    finally:
        os.close(fd)
    _record_range(part, None)
    return set()


def _record_range(part: Path, index: int | None) -> None:
    """Blocking: append ``index`` to the record of ranges on disk (None: start it empty)."""
    flags = (
        os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if index is not None else os.O_TRUNC)
    )
    fd = os.open(_done_file(part), flags, 0o644)
    try:
        if index is not None:
            os.write(fd, f"{index}\n".encode())
    finally:
        os.close(fd)
