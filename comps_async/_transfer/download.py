"""The download engine: files streamed to disk in large blocks, resumable, split into
concurrent ranges when big, verified by length and md5 as they arrive (``digest.py``), gathered
in scratch files (``scratch.py``) and published by rename inside the destination
(``paths.py``)."""

from __future__ import annotations

import logging
import os
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread
import httpx

from .._concurrency import AdaptiveLimit, deadline, first_error
from .._failures import Attempts, Failure, classify
from ..errors import (
    RESUMES,
    ChecksumMismatchError,
    TransferError,
)
from . import scratch
from .digest import InOrderDigest
from .fileio import pwrite_all
from .scratch import scratch_path

if TYPE_CHECKING:
    from .._requester import Requester

__all__ = ["DownloadSettings", "Downloader"]

logger = logging.getLogger(__name__)


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
        have = await anyio.to_thread.run_sync(
            scratch.prepare, target, part, length, overwrite, root
        )
        if have is None:
            return False
        digest = InOrderDigest(part)
        if length is not None and length >= self.settings.parallel_threshold_bytes:
            try:
                await self._ranges(url, part, length, digest)
            except _RangeIgnored:  # a server or proxy that answers 200: one stream, verified
                logger.info("%s: Range ignored by the server; fetching it as one stream", url)
                await anyio.to_thread.run_sync(scratch.discard, part)
                digest = InOrderDigest(part)
                await self._sequential(url, part, length, digest, 0)
        elif length == 0:  # an empty file (most stderr.txt) needs no request at all
            await anyio.to_thread.run_sync(scratch.create_empty, part)
        else:
            try:
                await self._sequential(url, part, length, digest, have)
            except _NotTheListedFile as wrong:
                raise ChecksumMismatchError(
                    f"{target.name}: length the server declared",
                    expected=str(length),
                    actual=str(wrong.declared),
                ) from None
        size = await anyio.to_thread.run_sync(scratch.size_of, part)
        if length is not None and size != length:
            raise ChecksumMismatchError(
                f"{target.name}: length", expected=str(length), actual=str(size)
            )
        if md5_hex:
            actual = await digest.finish(size)
            if actual != md5_hex.replace("-", "").lower():
                # The bytes are wrong, not missing: resuming them would keep them wrong.
                await anyio.to_thread.run_sync(scratch.discard, part)
                raise ChecksumMismatchError(f"{target.name}: md5", expected=md5_hex, actual=actual)
        await anyio.to_thread.run_sync(scratch.publish, part, target)
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
        self, url: str, part: Path, length: int | None, digest: InOrderDigest, have: int
    ) -> None:
        attempts = Attempts(self.requester.retry, self.settings.max_attempts)
        async for attempt in attempts:
            if attempt > 1:
                have = await anyio.to_thread.run_sync(scratch.size_of, part)
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
        digest: InOrderDigest | None = None,
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
        fd = await anyio.to_thread.run_sync(scratch.open_for, part, mode)
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

    async def _ranges(self, url: str, part: Path, length: int, digest: InOrderDigest) -> None:
        size = self.settings.range_bytes
        spans = [(start, min(start + size, length) - 1) for start in range(0, length, size)]
        done = await anyio.to_thread.run_sync(scratch.start_ranges, part, length)
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
                        await anyio.to_thread.run_sync(scratch.record_range, part, index)
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
