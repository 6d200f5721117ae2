"""Large-asset upload (protocol §8.4): ask the server what it has, send the rest in
Content-Range chunks, each chunk retried on its own; resumable from the server's reported size.

Chunks of one file go in order by default: whether real COMPS accepts out-of-order chunks is not
known (§8.4 shows only a sequential client), so parallelism comes from uploading many files at
once. ``UploadSettings(parallel_chunks=N)`` sends N chunks of a file at once, for servers that
accept them (the local server does with ``Compat(out_of_order_chunks=True)``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

import anyio
import anyio.to_thread

from .._concurrency import AdaptiveLimit, gather_bounded
from .._constants import LARGE_FILE_BYTES
from .._responses import json_body
from ..errors import ApiError, ChecksumMismatchError, MalformedResponseError, NotFoundError
from ..models import ContentSource
from .budget import ByteBudget

if TYPE_CHECKING:
    from .._requester import Requester

__all__ = ["UploadSettings", "Uploader"]


BytesSentCallback = Callable[[int], None]  # on_progress(bytes_sent_now)


@dataclass(frozen=True)
class UploadSettings:
    """Knobs of the upload engine (docs/howto/concurrency.md)."""

    # Bytes per Content-Range request: chunks are streamed from disk, so their size costs no
    # memory; big chunks mean fewer round trips (a failed one is re-sent whole, though).
    chunk_bytes: int = 32 << 20
    stream_block_bytes: int = 256 << 10  # a chunk is streamed from disk in blocks of this size
    budget_bytes: int = 32 << 20  # session-wide file bytes held in memory at once
    small_request_bytes: int = 4 << 20  # file-only requests of small files (held in memory)
    # An asset collection whose small files add up to at most this carries them in its save
    # (pyCOMPS's layout, one request); above it, an md5-only save asks what is missing first.
    inline_bytes: int = 64 << 10
    large_file_bytes: int = LARGE_FILE_BYTES
    # Files uploaded at once follow the throughput they reach (AdaptiveLimit): from
    # parallel_files up to max_parallel_files; budget_bytes still bounds memory.
    parallel_files: int = 8
    max_parallel_files: int = 32
    # Chunks of one file in flight. 1 (in order) is the safe default: whether COMPS accepts
    # out-of-order chunks is not known. Raise it only for a server that does (the local server
    # with Compat(out_of_order_chunks=True)).
    parallel_chunks: int = 1


class Uploader:
    """The session-wide upload engine."""

    def __init__(self, requester: Requester, settings: UploadSettings) -> None:
        self.requester = requester
        self.settings = settings
        self.budget = ByteBudget(settings.budget_bytes)
        first = settings.parallel_files
        self.files = AdaptiveLimit(first, max(first, settings.max_parallel_files))

    async def server_has(self, md5: UUID) -> int | None:
        """What the server holds of ``md5``: -1 when complete (HTTP 200), the partial size after
        an interrupted upload (HTTP 206), or None (start at byte 0)."""
        try:
            response = await self.requester.request("GET", f"upload/check/{md5}")
        except NotFoundError:
            return None
        # pyCOMPS (upload_large_asset, §8.4): 200 complete, 206 partial, anything else: start.
        if response.status_code not in (200, 206):
            return None
        size = json_body(response).get("Size") if response.content else None
        if size is not None and not isinstance(size, int):
            raise MalformedResponseError(f"upload check answered Size {size!r}")
        if response.status_code == 206:
            return size or 0
        return -1  # 200: complete, whatever Size says (pyCOMPS reads nothing more)

    async def upload(
        self,
        source: ContentSource,
        md5: UUID,
        size: int,
        on_progress: BytesSentCallback | None = None,
    ) -> int:
        """Upload ``source`` unless the server has it; returns the bytes actually sent."""
        have = await self.server_has(md5)
        if have is not None and (have < 0 or have >= size):
            if on_progress is not None:
                on_progress(size)
            return 0
        offset = max(have or 0, 0)
        if on_progress is not None and offset:
            on_progress(offset)
        spans = [
            (start, min(start + self.settings.chunk_bytes, size) - 1)
            for start in range(offset, size, self.settings.chunk_bytes)
        ]

        async def send(span: tuple[int, int]) -> int:
            start, end = span
            length = end - start + 1
            body = _SourceSlice(
                source, start, length, self.settings.stream_block_bytes, self.files.moved
            )
            async with self.budget.hold(self.settings.stream_block_bytes):
                try:
                    await self.requester.request(
                        "POST",
                        f"upload/{md5}",
                        content=body,
                        idempotent=True,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Length": str(length),
                            "Content-Range": f"bytes {start}-{end}/{size}",
                        },
                    )
                except ApiError as exc:
                    if exc.status == 400 and "md5" in exc.message:
                        raise ChecksumMismatchError(
                            f"{source!r} changed while uploading",
                            expected=str(md5),
                            actual=exc.message,
                        ) from exc
                    raise
            if on_progress is not None:
                on_progress(length)
            return length

        if self.settings.parallel_chunks <= 1:  # in order, one at a time (the default, §8.4)
            return sum([await send(span) for span in spans])
        return sum(await gather_bounded(spans, send, self.settings.parallel_chunks))


class _SourceSlice:
    """``length`` bytes of a source from ``offset``, streamed in small blocks read off the event
    loop. Re-iterable, so a retried chunk is read again instead of being held in memory."""

    def __init__(
        self,
        source: ContentSource,
        offset: int,
        length: int,
        block: int,
        moved: Callable[[int], None],
    ) -> None:
        self._source = source
        self._offset = offset
        self._length = length
        self._block = block
        self._moved = moved  # bytes handed to the transport, for the adaptive file count

    async def __aiter__(self) -> AsyncIterator[bytes]:
        position, end = self._offset, self._offset + self._length
        while position < end:
            piece = await _read_at(self._source, position, min(self._block, end - position))
            if not piece:
                raise ChecksumMismatchError(
                    f"{self._source!r}: size",
                    expected=str(end),
                    actual=f"{position} (the file shrank)",
                )
            position += len(piece)
            self._moved(len(piece))
            yield piece


async def _read_at(source: ContentSource, offset: int, length: int) -> bytes:
    if source.data is not None:
        return source.data[offset : offset + length]
    assert source.path is not None
    path = source.path

    def read() -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    return await anyio.to_thread.run_sync(read)
