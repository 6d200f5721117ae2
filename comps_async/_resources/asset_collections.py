"""``session.asset_collections``: create collections with the two-pass, missing-only protocol
(§8.3), and download or zip their files (§10.5)."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, ClassVar

import anyio
import anyio.to_thread

from .._concurrency import gather_bounded
from .._constants import MAX_ASSET_COLLECTION_BYTES, MAX_ZIP_BYTES
from .._responses import json_body
from .._transfer.assets import BytesProgressCallback, upload_collection
from .._transfer.batching import BatchLimits, BatchSaver
from .._transfer.content import check_readable_file
from .._transfer.download import Downloader
from .._transfer.fingerprints import Hasher
from .._transfer.paths import safe_join
from .._transfer.upload import Uploader
from ..models import AssetCollection, AssetCollectionFile
from ..models._base import Tags
from . import environments
from .base import EntityResource, IdLike, as_id

if TYPE_CHECKING:
    from .._requester import Requester
    from .outputs import Outputs
    from .peers import Peers

__all__ = ["DEFAULT_EXCLUDE", "AssetCollections", "files_from_dir"]


# What pyCOMPS's createac leaves out of a directory (§13).
DEFAULT_EXCLUDE = ("idmtools.log", "COMPS_log.log")


class AssetCollections(EntityResource[AssetCollection]):
    """``session.asset_collections``."""

    model: ClassVar[type[AssetCollection]] = AssetCollection

    def __init__(
        self,
        requester: Requester,
        peers: Peers,
        *,
        hasher: Hasher,
        uploader: Uploader,
        downloader: Downloader,
        outputs: Outputs,
    ) -> None:
        super().__init__(requester, peers)
        self._hasher = hasher
        self._uploader = uploader
        self._downloader = downloader
        self._outputs = outputs

    async def create(
        self,
        files: Iterable[AssetCollectionFile],
        *,
        tags: Tags | None = None,
        on_progress: BytesProgressCallback | None = None,
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
        return await upload_collection(
            list(files),
            tags,
            uploader=self._uploader,
            hasher=self._hasher,
            save=lambda collection: self._save(collection, key),
            on_progress=on_progress,
        )

    async def create_from_dir(
        self,
        directory: str | PathLike[str],
        *,
        tags: Tags | None = None,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        on_progress: BytesProgressCallback | None = None,
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
            self._requester,
            AssetCollection,
            hasher=self._hasher,
            uploader=self._uploader,
            concurrency=1,
            limits=BatchLimits(max_entities=1, max_bytes=MAX_ASSET_COLLECTION_BYTES),
            key=key,
            find_by_key=self.find_by_keys if self._requester.idempotency_tags else None,
            params=await self._visibility(),
        )
        await saver.run([collection])

    async def _visibility(self) -> dict[str, str] | None:
        """pyCOMPS (AssetCollection.save, §6.5): with ``COMPS_ENVIRONMENT`` set, a collection
        is saved with ``?groupnames=<that environment's GroupName>`` so its group can see it."""
        name = os.environ.get("COMPS_ENVIRONMENT")
        if not name:
            return None
        group = (await environments.get(self._requester, name)).get("GroupName")
        return {"groupnames": str(group)} if group else None

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
        downloader = self._downloader

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
        response = await self._requester.request("POST", "ZipAssets", json=body, idempotent=True)
        return await self._outputs.fetch_zip(json_body(response), Path(dest_file), extract_to)

    async def _assets(self, collection: IdLike) -> list[AssetCollectionFile]:
        fetched = await self.get(as_id(collection), children=["assets"])
        return list(fetched.assets or [])


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
