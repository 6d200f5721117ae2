"""``session.outputs``: list, read, tail, download, harvest and zip the output files of
simulations and work items (protocol §10)."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import aclosing
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

import anyio
import anyio.to_thread

from .._concurrency import AdaptiveLimit, BoundedStream, Spawn, aiter_any, gather_bounded
from .._constants import DEFAULT_HARVEST_CONCURRENCY, MAX_READ_BYTES, MAX_ZIP_BYTES
from .._query import Query
from .._responses import json_body, json_list, read_model
from .._transfer.download import Downloader
from .._transfer.paths import extract_zip_safely, safe_join
from ..errors import ChecksumMismatchError, CompsError, MalformedResponseError, NotFoundError
from ..models import Entity, Experiment, OutputFileMetadata, Simulation, SimulationState, WorkItem
from .base import as_id

if TYPE_CHECKING:
    from .._requester import Requester
    from .entities import Simulations
    from .peers import Peers

__all__ = ["MAX_ZIP_BYTES", "Harvest", "Harvested", "Listed", "OutputOwner", "Outputs"]

logger = logging.getLogger(__name__)

_UTF8_SLACK = 3  # a UTF-8 character has at most 3 continuation bytes (§10.4, tail utility)
# Simulations below Commissioned have no working directory yet (getexpout skips them, §13).
_NO_OUTPUT_STATES = frozenset(
    {SimulationState.Created, SimulationState.CommissionRequested, SimulationState.Provisioning}
)

OutputOwner = Simulation | WorkItem | UUID | str  # what has outputs (by object or id)
ItemT = TypeVar("ItemT")  # what is listed: an item, or what carries one (see listed_ahead)
_HASH_ON_LOOP_BYTES = 256 << 10  # smaller contents are hashed faster than a thread hop


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Harvested:
    """One result of ``harvest``: a file that landed (``error`` is None), a file that could not
    be fetched (``local_path`` None, ``error`` set), or a simulation whose outputs could not be
    listed (``path`` and ``local_path`` None, ``error`` set)."""

    simulation_id: UUID
    path: str | None
    local_path: Path | None
    size: int
    skipped: bool = False
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the file is on disk."""
        return self.error is None


@dataclass(frozen=True)
class Listed(Generic[ItemT]):
    """One item's output files by path, or (``error`` set, ``files`` empty) why they could not
    be listed."""

    item: ItemT
    files: dict[str, OutputFileMetadata]
    error: BaseException | None = None


@dataclass(frozen=True)
class _File:
    """One listed file a harvest fetches."""

    simulation_id: UUID
    path: str
    meta: OutputFileMetadata


@dataclass
class _Counts:
    """What a harvest has seen so far, shared by its work and its ``Harvest`` (the work holds
    this, not the ``Harvest``, so a dropped ``Harvest`` is garbage and stops its work)."""

    simulations_listed: int = 0
    files_matched: int = 0


class Harvest:
    """The results of ``harvest``: an async iterator of ``Harvested`` and an async context
    manager that closes it (stopping the remaining downloads) when the block is left."""

    def __init__(self, results: BoundedStream[Harvested], counts: _Counts) -> None:
        self._results = results
        self._counts = counts

    @property
    def simulations_listed(self) -> int:
        """Simulations listed so far (a progress bar's total grows with it)."""
        return self._counts.simulations_listed

    @property
    def files_matched(self) -> int:
        """Files matched so far, over the simulations listed."""
        return self._counts.files_matched

    def __aiter__(self) -> Harvest:
        return self

    async def __anext__(self) -> Harvested:
        return await self._results.__anext__()

    async def aclose(self) -> None:
        """Stop the remaining work and wait until it has stopped (idempotent)."""
        await self._results.aclose()

    async def __aenter__(self) -> Harvest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _target(entity: OutputOwner) -> tuple[str, UUID]:
    if isinstance(entity, WorkItem):
        return "WorkItems", as_id(entity)
    if isinstance(entity, Simulation):
        return "Simulations", as_id(entity)
    if isinstance(entity, Entity):
        raise TypeError(
            f"outputs belong to simulations and work items, not "
            f"{type(entity).__name__}s; use harvest() for an experiment"
        )
    return "Simulations", as_id(entity)


class Outputs:
    """Output files of simulations and work items."""

    def __init__(self, requester: Requester, peers: Peers, downloader: Downloader) -> None:
        self._requester = requester
        self._peers = peers
        self._downloader = downloader
        self._warned_md5 = False

    async def info(
        self,
        entity: OutputOwner,
        paths: Iterable[str] | None = None,
        *,
        hpc_job: UUID | str | None = None,
    ) -> dict[str, OutputFileMetadata]:
        """Output files by path (``output/InsetChart.json``). Requested paths match
        case-insensitively like pyCOMPS, but paths that differ only by case are all kept."""
        plural, entity_id = _target(entity)
        params = {"flatten": "1"}
        if hpc_job is not None:
            if plural == "WorkItems":
                raise ValueError("work items have no HPC jobs; do not pass hpc_job")
            params["hpcjobid"] = str(as_id(hpc_job))
        response = await self._requester.request(
            "GET", f"asset/{plural}/{entity_id}/Output", params=params
        )
        url = str(response.request.url)
        files = [
            read_model(OutputFileMetadata, row, url=url)
            for row in json_list(response, "Resources", required=True)
        ]
        listing = {f.path: f for f in files}
        if paths is None:
            return listing
        return {path: _lookup(listing, path, entity_id) for path in paths}

    async def read(self, entity: OutputOwner, path: str) -> bytes:
        """The whole content of a small output file, verified like a download: nothing past its
        listed length is read (a server that sends more is cut there), its length and listed
        MD5 must match, and a file with no listed length may not exceed 256 MiB."""
        return await self.read_listed((await self.info(entity, [path]))[path])

    async def read_listed(self, meta: OutputFileMetadata) -> bytes:
        """``read`` for a file already listed by ``info`` (no second listing)."""
        path = meta.path
        limit = meta.length if meta.length is not None else MAX_READ_BYTES + 1
        if limit > MAX_READ_BYTES + 1:
            raise ValueError(f"{path} is {meta.length} bytes; use download() for big files")
        data = b"" if limit == 0 else await self._read_at_most(_url(meta), limit)
        if len(data) > MAX_READ_BYTES or (meta.length is not None and len(data) != meta.length):
            raise ChecksumMismatchError(
                f"{path}: length", expected=str(meta.length), actual=str(len(data))
            )
        expected = self._md5_of(meta)
        actual = (
            await anyio.to_thread.run_sync(_md5_hex, data)  # ~5 ms per 2 MB: off the loop
            if len(data) > _HASH_ON_LOOP_BYTES
            else _md5_hex(data)
        )
        if expected and actual != expected:
            raise ChecksumMismatchError(f"{path}: md5", expected=expected, actual=actual)
        return data

    async def _read_at_most(self, url: str, limit: int) -> bytes:
        """The body of ``url``, or its first ``limit`` bytes if it is longer."""
        pieces: list[bytes] = []
        size = 0
        async with self._requester.stream("GET", url) as response:
            async for chunk in response.aiter_bytes():
                if size + len(chunk) > limit:  # slicing copies: only the last piece needs it
                    chunk = chunk[: limit - size]
                pieces.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        return b"".join(pieces)

    async def read_range(
        self, entity: OutputOwner, path: str, start: int, end: int | None = None
    ) -> bytes:
        """Bytes ``start..end`` (inclusive) of an output file; ``start < 0`` with no ``end``
        means the last ``-start`` bytes; ``end=None`` reads to the end (§10.4)."""
        if start < 0 and end is not None:
            raise ValueError("a negative start means 'last N bytes' and takes no end")
        if end is not None and end < start:
            raise ValueError(f"end {end} is before start {start}")
        meta = (await self.info(entity, [path]))[path]
        if start < 0:
            spec = f"bytes={start}"
        else:
            spec = f"bytes={start}-" + ("" if end is None else str(end))
        if meta.length == 0:
            return b""
        response = await self._requester.request("GET", _url(meta), headers={"Range": spec})
        return response.content

    async def tail(self, entity: OutputOwner, path: str, nbytes: int = 1024) -> str:
        """The last ``nbytes`` of a text file, cut at a UTF-8 character boundary."""
        if nbytes <= 0:
            raise ValueError("nbytes must be positive")
        meta = (await self.info(entity, [path]))[path]
        length = meta.length or 0
        if length == 0:
            return ""
        want = min(length, nbytes + _UTF8_SLACK)
        response = await self._requester.request(
            "GET", _url(meta), headers={"Range": f"bytes=-{want}"}
        )
        data = response.content
        if len(data) > nbytes:
            cut = len(data) - nbytes
            while cut > 0 and (data[cut] & 0xC0) == 0x80:  # do not start inside a character
                cut -= 1
            data = data[cut:]
        return data.decode("utf-8", errors="replace")

    async def download(
        self,
        entity: OutputOwner,
        paths: Iterable[str] | None,
        dest: str | PathLike[str],
        *,
        overwrite: bool = False,
        hpc_job: UUID | str | None = None,
    ) -> list[Path]:
        """Download files (all when ``paths`` is None) to ``dest/<path>``; complete files are
        skipped unless ``overwrite``; partial ones resume. Returns the local paths."""
        root = Path(dest)
        listing = await self.info(entity, paths, hpc_job=hpc_job)
        for path in listing:  # every name is checked before anything is written
            safe_join(root, path)

        async def one(item: tuple[str, OutputFileMetadata]) -> Path:
            target, _ = await self._fetch(item[1], root, item[0], overwrite)
            return target

        return await gather_bounded(list(listing.items()), one, self._downloader.settings.streams)

    def _md5_of(self, meta: OutputFileMetadata) -> str | None:
        """The listed MD5 to verify against; an MD5 in a form no one can read is not a reason
        to fail a download (its length is still verified), said once per session."""
        readable = meta.md5_hex
        if meta.md5 and readable is None and not self._warned_md5:
            self._warned_md5 = True
            logger.warning(
                "the server lists MD5s in a form comps_async cannot read (%r): downloads are "
                "verified by length only",
                meta.md5,
            )
        return readable

    async def _fetch(
        self, meta: OutputFileMetadata, root: Path, path: str, overwrite: bool
    ) -> tuple[Path, bool]:
        """Download one listed file to ``root/path``; (local path, whether bytes were fetched)."""
        target = safe_join(root, path)
        fetched = await self._downloader.fetch(
            _url(meta),
            target,
            length=meta.length,
            md5_hex=self._md5_of(meta),
            overwrite=overwrite,
            inside=root,
        )
        return target, fetched

    def harvest(
        self,
        source: Experiment | UUID | str | Query | Iterable[Simulation] | AsyncIterable[Simulation],
        patterns: Sequence[str],
        dest: str | PathLike[str],
        *,
        concurrency: int = DEFAULT_HARVEST_CONCURRENCY,
        overwrite: bool = False,
        case_sensitive: bool = False,
    ) -> Harvest:
        """Fetch the outputs matching glob ``patterns`` of many simulations to
        ``dest/<sim-id>/<path>``, yielding each file as it lands so analysis can start at once.
        One listing per simulation, listed ahead of the downloads (``listed_ahead``) so that
        ``concurrency`` files are always downloading; a simulation or file that fails is
        reported as a ``Harvested`` with ``error`` and never stops the others; re-running
        skips complete files. Memory is bounded by ``concurrency``, not by the number of
        simulations.

        Use it as ``async with s.outputs.harvest(...) as results: async for got in results``:
        leaving the block (a ``break``, an error) stops the remaining work and returns once it
        has stopped. A bare ``async for`` works too; left early, its work stops as soon as the
        dropped ``Harvest`` is garbage."""
        if isinstance(patterns, str):
            patterns = [patterns]
        if not patterns:
            raise ValueError("give at least one glob pattern, e.g. 'output/*.json'")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        counts = _Counts()
        return Harvest(
            self._harvest(
                source, patterns, Path(dest), concurrency, overwrite, case_sensitive, counts
            ),
            counts,
        )

    def _harvest(
        self,
        source: Experiment | UUID | str | Query | Iterable[Simulation] | AsyncIterable[Simulation],
        patterns: Sequence[str],
        root: Path,
        concurrency: int,
        overwrite: bool,
        case_sensitive: bool,
        counts: _Counts,
    ) -> BoundedStream[Harvested]:
        sims = simulations_of(self._peers.simulations, source)
        listings = listed_ahead(self.info, self._requester.spawn, sims, concurrency)

        async def files() -> AsyncGenerator[_File | Harvested, None]:
            async with aclosing(listings):  # closed with the downloads (a break, an error)
                async for listed in listings:
                    sim_id = listed.item.id
                    assert sim_id is not None
                    counts.simulations_listed += 1
                    if listed.error is not None:
                        logger.warning("harvest of %s failed: %s", sim_id, listed.error)
                        yield Harvested(sim_id, None, None, 0, error=listed.error)
                        continue
                    wanted = [
                        _File(sim_id, path, meta)
                        for path, meta in listed.files.items()
                        if _matches(path, patterns, case_sensitive)
                    ]
                    counts.files_matched += len(wanted)
                    for file in wanted:
                        yield file

        async def fetch(
            job: _File | Harvested, emit: Callable[[Harvested], Awaitable[None]]
        ) -> None:
            if isinstance(job, Harvested):  # a simulation that could not be listed
                await emit(job)
                return
            sim_id, path, meta = job.simulation_id, job.path, job.meta
            try:
                target, fetched = await self._fetch(meta, root, f"{sim_id}/{path}", overwrite)
            except (CompsError, OSError, ValueError) as exc:
                logger.warning("harvest of %s/%s failed: %s", sim_id, path, exc)
                await emit(Harvested(sim_id, path, None, 0, error=exc))
                return
            await emit(Harvested(sim_id, path, target, meta.length or 0, skipped=not fetched))

        return BoundedStream(self._requester.spawn, files(), fetch, concurrency, concurrency * 4)

    async def zip(
        self,
        entity: OutputOwner,
        paths: Iterable[str] | None,
        dest_file: str | PathLike[str],
        *,
        extract_to: str | PathLike[str] | None = None,
        hpc_job: UUID | str | None = None,
    ) -> Path:
        """Have the server zip the files (all when ``paths`` is None) and download the archive
        to ``dest_file``; optionally extract it safely. Refused before any zip request when
        the files add up to more than 1 GiB."""
        plural, entity_id = _target(entity)
        listing = await self.info(entity, paths, hpc_job=hpc_job)
        total = sum(m.length or 0 for m in listing.values())
        if total > MAX_ZIP_BYTES:
            raise ValueError(
                f"the files add up to {total} bytes, over COMPS's 1 GiB zip limit; "
                "use download() instead"
            )
        params = {"zip": "1"}
        if hpc_job is not None:
            params["hpcjobid"] = str(as_id(hpc_job))
        response = await self._requester.request(
            "POST",
            f"asset/{plural}/{entity_id}/Output",
            params=params,
            idempotent=True,
            json={"ContainerType": "CompressedZip", "Ids": [str(m.id) for m in listing.values()]},
        )
        return await self.fetch_zip(json_body(response), Path(dest_file), extract_to)

    async def fetch_zip(
        self, answer: dict[str, Any], dest_file: Path, extract_to: str | PathLike[str] | None
    ) -> Path:
        """Download the one zip resource of a zip answer (and extract it safely)."""
        resources = answer.get("Resources") or []
        if not isinstance(resources, list) or len(resources) != 1:
            raise MalformedResponseError(f"expected one zip resource, got {str(resources)[:200]}")
        meta = read_model(OutputFileMetadata, resources[0])
        await self._downloader.fetch(_url(meta), dest_file, length=meta.length, overwrite=True)
        if extract_to is not None:
            await anyio.to_thread.run_sync(extract_zip_safely, dest_file, Path(extract_to))
        return dest_file


def listed_ahead(
    list_outputs: Callable[[ItemT], Awaitable[dict[str, OutputFileMetadata]]],
    spawn: Spawn,
    items: AsyncIterable[ItemT],
    most: int,
    needs: Callable[[ItemT], bool] | None = None,
) -> BoundedStream[Listed[ItemT]]:
    """Each item's output listing by ``list_outputs`` (``Outputs.info``), or why it could not
    be listed, listed ahead of the work that consumes them, as they come: downloads never wait
    for a listing's round trip.
    How many listings run at once follows the listings finished per second (from a
    quarter of ``most`` up to ``most``: a far server needs many, a near one few); a
    consumer that falls behind holds them back, so memory stays bounded however many
    items there are. Items for which ``needs`` is False are passed on unlisted (no files,
    no request)."""

    async def list_one(item: ItemT, emit: Callable[[Listed[ItemT]], Awaitable[None]]) -> None:
        if needs is not None and not needs(item):
            await emit(Listed(item, {}))
            return
        try:
            files = await list_outputs(item)
        except (CompsError, OSError, ValueError) as exc:
            await emit(Listed(item, {}, exc))
            return
        await emit(Listed(item, files))

    limit = AdaptiveLimit(max(1, most // 4), most)
    return BoundedStream(spawn, items, list_one, limit, most)


def _url(meta: OutputFileMetadata) -> str:
    if not meta.url:
        raise MalformedResponseError(f"the server gave no Url for {meta.path}")
    return meta.url


def _lookup(
    listing: dict[str, OutputFileMetadata], path: str, entity_id: UUID
) -> OutputFileMetadata:
    wanted = path.replace("\\", "/").strip("/")
    if wanted in listing:
        return listing[wanted]
    matches = [meta for key, meta in listing.items() if key.lower() == wanted.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(
            f"{path!r} matches several outputs that differ only by case: "
            + ", ".join(m.path for m in matches)
        )
    raise NotFoundError(
        404,
        f"{entity_id} has no output {path!r}",
        hint="List its outputs (session.outputs.info(entity)) to see the paths.",
    )


def _matches(path: str, patterns: Sequence[str], case_sensitive: bool) -> bool:
    if case_sensitive:
        return any(fnmatch.fnmatchcase(path, p) for p in patterns)
    return any(fnmatch.fnmatchcase(path.lower(), p.lower()) for p in patterns)


async def simulations_of(
    simulations: Simulations,
    source: Experiment | UUID | str | Query | Iterable[Simulation] | AsyncIterable[Simulation],
    selection: Query | None = None,
) -> AsyncGenerator[Simulation, None]:
    """The simulations a harvest or an analysis covers. Listed from the server (an
    experiment's, with ``selection``'s fields and children; or a query's), those that cannot
    have outputs yet are skipped; simulations the caller passes are all tried (their local
    state may be stale)."""
    if isinstance(source, Experiment | UUID | str | Query):
        chosen = selection or Query().select(["id", "state"])
        query = (
            source
            if isinstance(source, Query)
            else chosen.where([f"experiment_id={as_id(source)}"])
        )
        async with aclosing(simulations.iterate(query)) as listed:  # closed if we are
            async for sim in listed:
                if sim.state not in _NO_OUTPUT_STATES:
                    yield sim
    else:
        async with aclosing(aiter_any(source)) as given:
            async for sim in given:
                yield sim
