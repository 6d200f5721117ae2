"""Downloads to disk: streamed in large blocks, resumable, split into concurrent ranges when big,
verified by length and md5, published by rename; and the path rules that keep server-provided
names inside the destination directory."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread
import httpx

from ..concurrency import first_error
from ..errors import ChecksumMismatchError, TransferError
from .fileio import pwrite_all

if TYPE_CHECKING:
    from ..session import Session

__all__ = [
    "DownloadSettings",
    "Downloader",
    "UnsafePathError",
    "ensure_inside",
    "extract_zip_safely",
    "safe_join",
]

_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A server-provided path would land outside the destination directory."""


def safe_join(root: Path, relative: str) -> Path:
    """``root/relative`` for a server-provided ``relative`` path, refusing absolute paths, drive
    letters, ``..`` and anything else that leaves ``root`` (zip-slip, hostile listings). Pure
    string work, safe on the event loop; ``ensure_inside`` adds the symlink check on disk."""
    text = relative.replace("\\", "/")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or text.startswith("/") or _DRIVE.match(text) or ".." in parts or "\x00" in text:
        raise UnsafePathError(f"refusing to write {relative!r}: it leaves the destination")
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
    """Knobs of the download engine (defaults: see the README's concurrency section)."""

    # Bytes gathered per disk write (one thread hop): small for the many streams of a harvest,
    # so memory stays ~ streams x block; larger for the few range streams of one big file.
    block_bytes: int = 256 << 10
    range_block_bytes: int = 1 << 20
    range_bytes: int = 16 << 20  # big files are fetched as 16 MiB ranges ...
    parallel_threshold_bytes: int = 64 << 20  # ... when they are at least 64 MiB
    streams: int = 32  # session-wide streams in flight: memory <= streams x block_bytes
    ranges_per_file: int = 4  # one big file never takes every stream
    max_attempts: int = 6


@dataclass
class Downloader:
    """The session-wide download engine; ``streams`` bounds bytes in flight for every caller."""

    session: Session
    settings: DownloadSettings
    _slots: anyio.CapacityLimiter | None = None

    @property
    def slots(self) -> anyio.CapacityLimiter:
        if self._slots is None:  # created in the running event loop
            self._slots = anyio.CapacityLimiter(self.settings.streams)
        return self._slots

    async def fetch(
        self,
        url: str,
        target: Path,
        *,
        length: int | None,
        md5_hex: str | None = None,
        overwrite: bool = False,
        inside: Path | None = None,
    ) -> bool:
        """Download ``url`` to ``target``; returns False when a complete file was already
        there. Interrupted transfers leave ``<name>.part`` for the next call to resume. The md5
        is computed while the bytes arrive (in order), so verifying costs no second pass. With
        ``inside``, a target that symlinks already on disk would lead out of it is refused."""
        part = target.with_name(target.name + ".part")
        # File-system bookkeeping is batched into one worker-thread call before and one after
        # the transfer: for small files the hops, not the bytes, would be the cost.
        have = await anyio.to_thread.run_sync(_prepare, target, part, length, overwrite, inside)
        if have is None:
            return False
        digest = _InOrderDigest(part)
        if length is not None and length >= self.settings.parallel_threshold_bytes:
            await self._ranges(url, part, length, digest)
        else:
            await self._sequential(url, part, length, digest, have)
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

    async def _sequential(
        self, url: str, part: Path, length: int | None, digest: _InOrderDigest, have: int
    ) -> None:
        last: Exception | None = None
        for attempt in range(self.settings.max_attempts):
            if attempt:
                have = await anyio.to_thread.run_sync(_size, part)
            if length is not None and have >= length:
                return
            headers = {"Range": f"bytes={have}-"} if have else None
            try:
                async with self.slots, self.session.stream("GET", url, headers=headers) as resp:
                    if have and resp.status_code != 206:  # range ignored: start again
                        have = 0
                    digest.restart_at(have)
                    await self._write_stream(
                        resp, part, mode="ab" if have else "wb", offset=have, digest=digest
                    )
                return
            except (TransferError, httpx.TransportError) as exc:
                last = exc
                await anyio.sleep(min(2.0, 0.05 * 2**attempt))
        raise TransferError(
            f"download failed after {self.settings.max_attempts} attempts: {last}", url=url
        )

    async def _write_stream(
        self,
        response: httpx.Response,
        part: Path,
        *,
        mode: Literal["wb", "ab", "r+b"],
        offset: int = 0,
        digest: _InOrderDigest | None = None,
    ) -> None:
        """Copy the body into ``part`` (``wb`` fresh, ``ab`` resume, ``r+b`` a range at
        ``offset``), one block per thread hop; with ``digest``, the bytes are hashed in that
        same hop."""
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
                pieces.append(chunk)
                pending += len(chunk)
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
        done_file = _done_file(part)
        done = set()
        if await anyio.Path(part).exists() and await anyio.Path(done_file).exists():
            done = {int(x) for x in (await anyio.Path(done_file).read_text()).split()}
        else:
            await anyio.to_thread.run_sync(_preallocate, part, length)
            await anyio.Path(done_file).write_text("")
        for index in done:
            digest.written(spans[index][0], spans[index][1] + 1)
        lock = anyio.Lock()
        per_file = anyio.CapacityLimiter(self.settings.ranges_per_file)

        async def fetch_span(index: int) -> None:
            start, end = spans[index]
            last: Exception | None = None
            for attempt in range(self.settings.max_attempts):
                try:
                    async with (
                        per_file,
                        self.slots,
                        self.session.stream(
                            "GET", url, headers={"Range": f"bytes={start}-{end}"}
                        ) as resp,
                    ):
                        if resp.status_code != 206:
                            raise TransferError(
                                "the server does not answer Range requests", url=url
                            )
                        await self._write_stream(resp, part, mode="r+b", offset=start)
                    # Record progress so that an interrupted download can resume, and hash
                    # whatever is now contiguous from the start while other ranges arrive.
                    async with lock, await anyio.open_file(done_file, "a") as handle:
                        await handle.write(f"{index}\n")
                    digest.written(start, end + 1)
                    await digest.catch_up()
                    return
                except (TransferError, httpx.TransportError) as exc:
                    last = exc
                    await anyio.sleep(min(2.0, 0.05 * 2**attempt))
            raise TransferError(f"range {start}-{end} failed: {last}", url=url)

        try:
            async with anyio.create_task_group() as tg:
                for index in range(len(spans)):
                    if index not in done:
                        tg.start_soon(fetch_span, index)
        except BaseExceptionGroup as group:
            raise first_error(group) from None


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


def _done_file(part: Path) -> Path:
    return part.with_name(part.name + ".ranges")


def _prepare(
    target: Path, part: Path, length: int | None, overwrite: bool, inside: Path | None
) -> int | None:
    """Blocking: None when a complete ``target`` is already there; otherwise make its folder
    and return how many bytes of ``part`` a resumed transfer can keep (0 to start afresh)."""
    if inside is not None:
        ensure_inside(inside, target)
    if not overwrite and length is not None:
        try:
            info = target.stat()
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(info.st_mode) and info.st_size == length:
                return None
    target.parent.mkdir(parents=True, exist_ok=True)
    if overwrite:
        _discard(part)
    return _size(part)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _done_file(part).unlink(missing_ok=True)


def _publish(part: Path, target: Path) -> None:
    os.replace(part, target)
    _done_file(part).unlink(missing_ok=True)


def _open_for(path: Path, mode: str) -> int:
    """A raw file descriptor for ``wb`` (truncate), ``ab`` or ``r+b`` (keep) writes at explicit
    offsets."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if mode == "wb" else 0)
    return os.open(path, flags, 0o644)


def _preallocate(path: Path, length: int) -> None:
    with open(path, "wb") as handle:
        handle.truncate(length)
