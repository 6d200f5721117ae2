"""Large-asset upload (protocol §8.4): check what the server has, then send the rest in
Content-Range chunks. Resumable: an interrupted upload continues from the server's size."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from uuid import UUID

import anyio
import anyio.to_thread

from ..errors import NotFoundError
from ..models import ContentSource

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["CHUNK_BYTES", "LARGE_FILE_BYTES", "server_has", "upload_large"]

LARGE_FILE_BYTES = 10 * 1024 * 1024  # strictly larger goes through /upload (§8.4)
CHUNK_BYTES = 8 * 1024 * 1024


async def server_has(session: Session, md5: UUID) -> int | None:
    """Bytes of ``md5`` on the server: its size when complete, the partial size when a
    previous upload stopped (HTTP 206), ``None`` when unknown."""
    try:
        response = await session.request("GET", f"upload/check/{md5}")
    except NotFoundError:
        return None
    size = response.json().get("Size") if response.content else None
    if response.status_code == 206:
        return int(size or 0)
    return int(size) if size is not None else -1


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


async def upload_large(
    session: Session,
    source: ContentSource,
    md5: UUID,
    size: int,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Upload ``source`` unless the server has it; returns the bytes actually sent.

    Chunks go in order (whether COMPS accepts out-of-order chunks is unknown); each chunk is
    retried on its own by the RetryPolicy, since re-sending a range is harmless.
    """
    have = await server_has(session, md5)
    if have is not None and (have < 0 or (have >= size and size > 0)):
        return 0
    offset = max(have or 0, 0)
    sent = 0
    while offset < size:
        chunk = await _read_at(source, offset, min(chunk_bytes, size - offset))
        if not chunk:
            raise ValueError(f"{source!r} is shorter than its recorded size of {size} bytes")
        end = offset + len(chunk) - 1
        await session.request(
            "POST",
            f"upload/{md5}",
            content=chunk,
            idempotent=True,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {offset}-{end}/{size}",
            },
        )
        offset = end + 1
        sent += len(chunk)
        if on_progress is not None:
            on_progress(len(chunk))
    return sent
