"""Downloads to disk: streamed in large blocks, resumable, split into concurrent ranges when big,
verified by length and md5, published by rename; and the path rules that keep server-provided
names inside the destination directory."""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.to_thread
import httpx

from ..errors import ChecksumMismatchError, TransferError

if TYPE_CHECKING:
    from ..session import Session

__all__ = [
    "DownloadSettings",
    "Downloader",
    "UnsafePathError",
    "extract_zip_safely",
    "safe_join",
]

_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(ValueError):
    """A server-provided path would land outside the destination directory."""


def safe_join(root: Path, relative: str) -> Path:
    """``root/relative`` for a server-provided ``relative`` path, refusing absolute paths, drive
    letters, ``..`` and anything else that would leave ``root`` (zip-slip, hostile listings)."""
    text = relative.replace("\\", "/")
    parts = PurePosixPath(text).parts
    if not text or text.startswith("/") or _DRIVE.match(text) or ".." in parts or "\x00" in text:
        raise UnsafePathError(f"refusing to write {relative!r}: it leaves the destination")
    target = root.joinpath(*[p for p in parts if p not in ("", ".")])
    resolved_root = root.resolve()
    if not target.resolve().is_relative_to(resolved_root) or target.resolve() == resolved_root:
        raise UnsafePathError(f"refusing to write {relative!r}: it leaves the destination")
    return target


def extract_zip_safely(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip, refusing members whose names leave ``dest`` (blocking; run in a thread)."""
    written = []
    with zipfile.ZipFile(archive) as zipped:
        members = [
            (info, safe_join(dest, info.filename))
            for info in zipped.infolist()
            if not info.is_dir()
        ]  # check every name before writing anything
        for info, target in members:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, open(target, "wb") as out:
                while block := source.read(1 << 20):
                    out.write(block)
            written.append(target)
    return written


@dataclass(frozen=True)
class DownloadSettings:
    """Knobs of the download engine (defaults: see the README's concurrency section)."""

    block_bytes: int = 1 << 20  # write to disk in 1 MiB blocks
    range_bytes: int = 16 << 20  # big files are fetched as 16 MiB ranges ...
    parallel_threshold_bytes: int = 64 << 20  # ... when they are at least 64 MiB
    streams: int = 32  # session-wide streams in flight: memory <= streams x block_bytes
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
    ) -> bool:
        """Download ``url`` to ``target``; returns False when a complete file was already
        there. Interrupted transfers leave ``<name>.part`` for the next call to resume."""
        path = anyio.Path(target)
        if (
            not overwrite
            and length is not None
            and await path.is_file()
            and (await path.stat()).st_size == length
        ):
            return False
        await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        if overwrite:
            await anyio.Path(part).unlink(missing_ok=True)
        if length is not None and length >= self.settings.parallel_threshold_bytes:
            await self._ranges(url, part, length)
        else:
            await self._sequential(url, part, length)
        size = (await anyio.Path(part).stat()).st_size
        if length is not None and size != length:
            raise ChecksumMismatchError(
                f"{target.name}: length", expected=str(length), actual=str(size)
            )
        if md5_hex:
            actual = await anyio.to_thread.run_sync(_md5_hex, part)
            if actual != md5_hex.replace("-", "").lower():
                # The bytes are wrong, not missing: resuming them would keep them wrong.
                await anyio.Path(part).unlink(missing_ok=True)
                await anyio.Path(_done_file(part)).unlink(missing_ok=True)
                raise ChecksumMismatchError(f"{target.name}: md5", expected=md5_hex, actual=actual)
        await anyio.Path(part).replace(target)
        await anyio.Path(_done_file(part)).unlink(missing_ok=True)
        return True

    async def _sequential(self, url: str, part: Path, length: int | None) -> None:
        last: Exception | None = None
        for attempt in range(self.settings.max_attempts):
            have = (await anyio.Path(part).stat()).st_size if await anyio.Path(part).exists() else 0
            if length is not None and have >= length:
                return
            headers = {"Range": f"bytes={have}-"} if have else None
            try:
                async with self.slots, self.session.stream("GET", url, headers=headers) as resp:
                    if have and resp.status_code != 206:  # range ignored: start again
                        have = 0
                    await self._write_stream(resp, part, mode="ab" if have else "wb")
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
    ) -> None:
        """Copy the body into ``part`` (``wb`` fresh, ``ab`` resume, ``r+b`` at ``offset``),
        one block per thread hop."""
        block = self.settings.block_bytes
        buffer = bytearray()
        async with await anyio.open_file(part, mode) as out:
            if offset:
                await out.seek(offset)
            try:
                async for chunk in response.aiter_bytes():
                    buffer += chunk
                    if len(buffer) >= block:
                        await out.write(bytes(buffer))
                        buffer.clear()
            finally:
                # Bytes received before a broken connection are good: keep them for resuming.
                with anyio.CancelScope(shield=True):
                    await out.write(bytes(buffer))

    async def _ranges(self, url: str, part: Path, length: int) -> None:
        size = self.settings.range_bytes
        spans = [(start, min(start + size, length) - 1) for start in range(0, length, size)]
        done_file = _done_file(part)
        done = set()
        if await anyio.Path(part).exists() and await anyio.Path(done_file).exists():
            done = {int(x) for x in (await anyio.Path(done_file).read_text()).split()}
        else:
            await anyio.to_thread.run_sync(_preallocate, part, length)
            await anyio.Path(done_file).write_text("")
        lock = anyio.Lock()

        async def fetch_span(index: int) -> None:
            start, end = spans[index]
            last: Exception | None = None
            for attempt in range(self.settings.max_attempts):
                try:
                    async with (
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
                    # Record progress so that an interrupted download can resume.
                    async with lock, await anyio.open_file(done_file, "a") as handle:
                        await handle.write(f"{index}\n")
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


def _done_file(part: Path) -> Path:
    return part.with_name(part.name + ".ranges")


def _preallocate(path: Path, length: int) -> None:
    with open(path, "wb") as handle:
        handle.truncate(length)


def _md5_hex(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def first_error(group: BaseException) -> BaseException:
    """The first leaf of an exception group (task groups wrap a single failure)."""
    while isinstance(group, BaseExceptionGroup) and group.exceptions:
        group = group.exceptions[0]
    return group
