"""``session.asset_collections``: create collections with the two-pass, missing-only protocol
(§8.3), and download or zip their files (§10.5)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import ClassVar
from uuid import UUID

import anyio
import anyio.to_thread

from .._constants import MAX_ZIP_BYTES
from ..concurrency import first_error, gather_bounded
from ..errors import MissingAssetsError
from ..models import AssetCollection, AssetCollectionFile
from ..models._base import Tags
from ..responses import json_body
from ..transfer.batching import BatchLimits, BatchSaver
from ..transfer.content import check_readable_file, ensure_md5s, media_type, read_source
from ..transfer.download import safe_join
from ..transfer.upload import UploadSettings
from .base import EntityResource, IdLike, as_id

__all__ = ["DEFAULT_EXCLUDE", "AssetCollections", "files_from_dir"]

ProgressCallback = Callable[[int, int], None]

# What pyCOMPS's createac leaves out of a directory (§13).
DEFAULT_EXCLUDE = ("idmtools.log", "COMPS_log.log")
# §8.3: an asset-collection request may carry 100 files and 398 MiB; file-only requests are kept
# far smaller so that their bodies fit the session's byte budget.
MAX_FILES_PER_REQUEST = 100


class AssetCollections(EntityResource[AssetCollection]):
    """``session.asset_collections``."""

    model: ClassVar[type[AssetCollection]] = AssetCollection

    async def create(
        self,
        files: Iterable[AssetCollectionFile],
        *,
        tags: Tags | None = None,
        on_progress: ProgressCallback | None = None,
        key: str | None = None,
    ) -> AssetCollection:
        """Create a collection, uploading only the content the server does not have.

        Large files go first (``/upload/check``, then resumable chunks, many at once). Small
        files travel inline in the save, as pyCOMPS sends them, when they add up to at most
        ``UploadSettings.inline_bytes``; otherwise the collection is saved by md5 only, the
        server names what it lacks, that content is uploaded (file-only requests) and the save
        repeated — so an unchanged input set costs one request and no file bytes, and no request
        is refused that could have been avoided. ``on_progress(bytes_sent, bytes_to_send)``.
        If any upload fails, no collection is registered. The create is exactly once;
        ``key="..."`` makes its key yours, so a re-started script gets the same collection back
        (as ``save_all``).
        """
        files = list(files)
        if not files:
            raise ValueError("an asset collection needs at least one file")
        for file in files:
            if not isinstance(file, AssetCollectionFile):
                raise TypeError(f"expected AssetCollectionFile, got {type(file).__name__}")
        sizes = await anyio.to_thread.run_sync(_check_sources, files)
        _check_unique_paths(files)
        uploader = self._session.uploader
        settings = uploader.settings
        transfer = _Progress(on_progress)
        started: set[UUID] = set()
        slots = anyio.CapacityLimiter(settings.parallel_files)

        async def upload_large(file: AssetCollectionFile) -> None:
            assert file.source is not None and file.md5_checksum is not None
            async with slots:
                await uploader.upload(
                    file.source, file.md5_checksum, file.length or 0, transfer.sent
                )

        async def prepare(group: list[AssetCollectionFile]) -> None:
            await ensure_md5s(group, self._session.hasher)
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
            await self._save(collection, key)
        except MissingAssetsError as missing:  # the md5-only save named what the server lacks
            await self._upload_small(files, set(missing.md5s) - started, transfer)
            await self._save(collection, key)
        if inline:
            transfer.sent(sum(f.length or 0 for f in small))
        transfer.finish()
        return _with_sources(collection, files)

    async def create_from_dir(
        self,
        directory: str | PathLike[str],
        *,
        tags: Tags | None = None,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        on_progress: ProgressCallback | None = None,
        key: str | None = None,
    ) -> AssetCollection:
        """A collection of every file under ``directory`` (sub-directories become
        ``relative_path``), filtered by glob ``include``/``exclude`` on the relative path."""
        root = Path(directory)
        files = await anyio.to_thread.run_sync(files_from_dir, root, include, exclude)
        if not files:
            raise ValueError(f"no files under {str(root)!r} match {list(include)}")
        return await self.create(files, tags=tags, on_progress=on_progress, key=key)

    async def _save(self, collection: AssetCollection, key: str | None) -> None:
        saver: BatchSaver[AssetCollection] = BatchSaver(
            self._session,
            AssetCollection,
            concurrency=1,
            limits=BatchLimits(max_entities=1, max_bytes=407552 * 1024),
            key=key,
            find_by_key=self.find_by_keys if self._session.idempotency_tags else None,
            params=await self._visibility(),
        )
        await saver.run([collection])

    async def _visibility(self) -> dict[str, str] | None:
        """pyCOMPS (AssetCollection.save, §6.5): with ``COMPS_ENVIRONMENT`` set, a collection
        is saved with ``?groupnames=<that environment's GroupName>`` so its group can see it."""
        name = os.environ.get("COMPS_ENVIRONMENT")
        if not name:
            return None
        group = (await self._session.environment(name)).get("GroupName")
        return {"groupnames": str(group)} if group else None

    async def _upload_small(
        self, files: list[AssetCollectionFile], missing: set[UUID], transfer: _Progress
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
        uploader = self._session.uploader

        async def upload(batch: list[AssetCollectionFile]) -> None:
            size = sum(f.length or 0 for f in batch)
            async with uploader.budget.hold(size):
                parts = [
                    (
                        str(f.md5_checksum),
                        (f.file_name, await read_source(f.source), media_type(f.file_name)),
                    )
                    for f in batch
                    if f.source is not None
                ]
                await self._session.request(
                    "POST",
                    "AssetCollections",
                    idempotent=True,  # stores content, creates none
                    files=[("not_a_file", ("AssetCollections", b"[]", "application/json")), *parts],
                )
            transfer.sent(size)

        requests = _file_only_requests(todo, uploader.settings.small_request_bytes)
        await gather_bounded(requests, upload, uploader.settings.parallel_files)

    async def download(
        self,
        collection: IdLike,
        dest: str | PathLike[str],
        *,
        paths: Iterable[str] | None = None,
        overwrite: bool = False,
    ) -> list[Path]:
        """Download the collection's files (or those at ``paths``) to
        ``dest/<relative_path>/<file_name>``, each verified against its md5."""
        assets = await self._assets(collection)
        wanted = None if paths is None else {p.replace("\\", "/") for p in paths}
        chosen = [a for a in assets if wanted is None or a.path_in_collection in wanted]
        if wanted is not None and len(chosen) != len(wanted):
            known = {a.path_in_collection for a in assets}
            raise ValueError(f"not in the collection: {sorted(wanted - known)}")
        root = Path(dest)
        downloader = self._session.outputs.downloader

        async def one(asset: AssetCollectionFile) -> Path:
            if not asset.uri:
                raise ValueError(f"the server gave no Uri for {asset.path_in_collection}")
            target = safe_join(root, asset.path_in_collection)
            await downloader.fetch(
                asset.uri,
                target,
                length=asset.length,
                md5_hex=asset.md5_checksum.hex if asset.md5_checksum else None,
                overwrite=overwrite,
                inside=root,
            )
            return target

        return await gather_bounded(chosen, one, downloader.settings.streams)

    async def zip(
        self,
        collection: IdLike,
        dest_file: str | PathLike[str],
        *,
        extract_to: str | PathLike[str] | None = None,
    ) -> Path:
        """The whole collection as one zip from the server (``POST /ZipAssets``), refused before
        asking when over 1 GiB."""
        assets = await self._assets(collection)
        total = sum(a.length or 0 for a in assets)
        if total > MAX_ZIP_BYTES:
            raise ValueError(
                f"the collection is {total} bytes, over COMPS's 1 GiB zip limit; "
                "use download() instead"
            )
        body = {
            "ContainerType": "CompressedZip",
            "Assets": [
                {
                    "FileNameForAsset": a.path_in_collection.replace("/", "\\"),
                    "MD5": str(a.md5_checksum),
                }
                for a in assets
            ],
        }
        response = await self._session.request("POST", "ZipAssets", json=body, idempotent=True)
        return await self._session.outputs.fetch_zip(
            json_body(response), Path(dest_file), extract_to
        )

    async def _assets(self, collection: IdLike) -> list[AssetCollectionFile]:
        fetched = await self.get(as_id(collection), children=["assets"])
        return list(fetched.assets or [])


class _Progress:
    """Bytes sent for one collection, reported as (sent, bytes known to be needed so far)."""

    def __init__(self, callback: ProgressCallback | None) -> None:
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


def files_from_dir(
    root: Path, include: Sequence[str] = ("*",), exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> list[AssetCollectionFile]:
    """Blocking: the files under ``root`` as collection entries, sub-directories as
    ``relative_path`` (symlinks to files are followed, symlinked directories are not, so a link
    loop cannot recurse)."""
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is not a directory")
    files = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            relative = PurePosixPath(path.relative_to(root).as_posix())
            text = str(relative)
            if not any(fnmatch.fnmatch(text, p) or fnmatch.fnmatch(name, p) for p in include):
                continue
            if any(fnmatch.fnmatch(text, p) or fnmatch.fnmatch(name, p) for p in exclude):
                continue
            check_readable_file(path)
            parent = str(relative.parent)
            files.append(
                AssetCollectionFile.from_path(path, relative_path=None if parent == "." else parent)
            )
    return files
