"""Creating an asset collection: large files uploaded first (resumable chunks, several at
once) while the rest still hash, small files inline or sent in file-only requests after an
md5-only save names what the server lacks (§8.3), then one save."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from uuid import UUID

import anyio
import anyio.to_thread

from .._concurrency import first_error, gather_bounded
from .._constants import MAX_FILES_PER_REQUEST
from ..errors import MissingAssetsError
from ..models import AssetCollection, AssetCollectionFile
from ..models._base import Tags
from .content import check_readable_file, ensure_md5s, media_type, read_source
from .fingerprints import Hasher
from .upload import Uploader, UploadSettings

__all__ = ["BytesProgressCallback", "upload_collection"]

# on_progress(bytes_sent, bytes_known_to_be_needed_so_far)
BytesProgressCallback = Callable[[int, int], None]


async def upload_collection(
    files: list[AssetCollectionFile],
    tags: Tags | None,
    *,
    uploader: Uploader,
    hasher: Hasher,
    save: Callable[[AssetCollection], Awaitable[None]],
    on_progress: BytesProgressCallback | None = None,
) -> AssetCollection:
    """Upload what ``files`` need and ``save`` the collection once (again after the server
    named missing content); see ``AssetCollections.create``."""
    files = list(files)
    if not files:
        raise ValueError("an asset collection needs at least one file")
    for file in files:
        if not isinstance(file, AssetCollectionFile):
            raise TypeError(f"expected AssetCollectionFile, got {type(file).__name__}")
    sizes = await anyio.to_thread.run_sync(_check_sources, files)
    _check_unique_paths(files)
    settings = uploader.settings
    transfer = _Progress(on_progress)
    started: set[UUID] = set()

    async def upload_large(file: AssetCollectionFile) -> None:
        assert file.source is not None and file.md5_checksum is not None
        async with uploader.files.limiter:
            await uploader.upload(file.source, file.md5_checksum, file.length or 0, transfer.sent)

    async def prepare(group: list[AssetCollectionFile]) -> None:
        await ensure_md5s(group, hasher)
        for file in group:
            md5 = file.md5_checksum
            if file.source is not None and _large(file, settings) and md5 not in started:
                # Big content is checked for and sent while other files still hash.
                assert md5 is not None
                started.add(md5)
                transfer.expect(file.length or 0)
                tg.start_soon(upload_large, file)

    try:
        async with anyio.create_task_group() as tg:
            groups = _hash_groups(files, sizes, settings.large_file_bytes)
            await gather_bounded(groups, prepare, os.cpu_count() or 1)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    # Saving before the large uploads finished would only earn a refusal naming them.
    small = [f for f in files if f.source is not None and not _large(f, settings)]
    inline = sum(f.length or 0 for f in small) <= settings.inline_bytes
    sent_inline = {id(f) for f in small} if inline else set()
    collection = AssetCollection(
        tags=tags, assets=[f if id(f) in sent_inline else _by_md5(f) for f in files]
    )
    if inline:
        transfer.expect(sum(f.length or 0 for f in small))
    try:
        await save(collection)
    except MissingAssetsError as missing:  # the md5-only save named what the server lacks
        await _upload_small(files, set(missing.md5s) - started, transfer, uploader)
        await save(collection)
    if inline:
        transfer.sent(sum(f.length or 0 for f in small))
    transfer.finish()
    return _with_sources(collection, files)


async def _upload_small(
    files: list[AssetCollectionFile], missing: set[UUID], transfer: _Progress, uploader: Uploader
) -> None:
    """Send the missing small files in file-only requests (§8.3), several at once."""
    sources = {f.md5_checksum: f for f in files if f.source is not None}
    unknown = sorted(missing - set(sources), key=str)
    if unknown:
        references = {
            m: [f.path_in_collection for f in files if f.md5_checksum == m] for m in unknown
        }
        raise MissingAssetsError(unknown, references)
    todo = [sources[m] for m in sorted(missing, key=str)]
    transfer.expect(sum(f.length or 0 for f in todo))

    async def upload(batch: list[AssetCollectionFile]) -> None:
        size = sum(f.length or 0 for f in batch)
        async with uploader.files.limiter, uploader.budget.hold(size):
            parts = [
                (
                    str(f.md5_checksum),
                    (f.file_name, await read_source(f.source), media_type(f.file_name)),
                )
                for f in batch
                if f.source is not None
            ]
            await uploader.requester.request(
                "POST",
                "AssetCollections",
                idempotent=True,  # stores content, creates none
                files=[("not_a_file", ("AssetCollections", b"[]", "application/json")), *parts],
            )
        uploader.files.moved(size)
        transfer.sent(size)

    requests = _file_only_requests(todo, uploader.settings.small_request_bytes)
    await gather_bounded(requests, upload, uploader.files.maximum)


class _Progress:
    """Bytes sent for one collection, reported as (sent, bytes known to be needed so far)."""

    def __init__(self, callback: BytesProgressCallback | None) -> None:
        self._callback = callback
        self._sent = 0
        self._total = 0

    def expect(self, nbytes: int) -> None:
        self._total += nbytes
        self._report()

    def sent(self, nbytes: int) -> None:
        self._sent += nbytes
        self._report()

    def finish(self) -> None:
        self._report()

    def _report(self) -> None:
        if self._callback is not None:
            self._callback(self._sent, self._total)


def _large(file: AssetCollectionFile, settings: UploadSettings) -> bool:
    return (file.length or 0) > settings.large_file_bytes


def _by_md5(file: AssetCollectionFile) -> AssetCollectionFile:
    """An md5-only copy, for a save that carries no content (§8.3)."""
    assert file.md5_checksum is not None
    return AssetCollectionFile.from_md5(
        file.file_name, file.md5_checksum, relative_path=file.relative_path, tags=file.tags
    )


def _with_sources(collection: AssetCollection, files: list[AssetCollectionFile]) -> AssetCollection:
    collection.assets = files  # the caller's objects, md5 and length filled in
    return collection


def _check_sources(files: list[AssetCollectionFile]) -> list[int]:
    """Blocking: the size of every file (0 for md5-only ones), after checking it is readable."""
    return [
        check_readable_file(f.source.path)
        if f.source is not None and f.source.path is not None
        else (f.length or 0)
        for f in files
    ]


def _hash_groups(
    files: list[AssetCollectionFile], sizes: list[int], threshold: int
) -> list[list[AssetCollectionFile]]:
    """Large files alone and first (their uploads start as soon as they are hashed), small ones
    in groups of 64 (one thread hop each)."""
    large = [[f] for f, size in zip(files, sizes, strict=True) if size > threshold]
    small = [f for f, size in zip(files, sizes, strict=True) if size <= threshold]
    return large + [small[i : i + 64] for i in range(0, len(small), 64)]


def _check_unique_paths(files: list[AssetCollectionFile]) -> None:
    seen: set[str] = set()
    for file in files:
        key = file.path_in_collection.lower()  # COMPS runs on Windows file systems
        if key in seen:
            raise ValueError(f"two files would be {file.path_in_collection!r} in the collection")
        seen.add(key)


def _file_only_requests(
    files: list[AssetCollectionFile], max_bytes: int
) -> list[list[AssetCollectionFile]]:
    """Group small files into file-only requests of at most 100 files and ``max_bytes``."""
    groups: list[list[AssetCollectionFile]] = []
    size = 0
    for file in files:
        length = file.length or 0
        if not groups or len(groups[-1]) >= MAX_FILES_PER_REQUEST or size + length > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(file)
        size += length
    return groups
