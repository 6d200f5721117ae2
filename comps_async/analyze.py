"""Analyze outputs as they land: idmtools' AnalyzeManager shape, on the async download engine.

Each item (a simulation or work item) is listed once; the files its analyzers ask for are read
into memory (verified by length and md5), and every analyzer's ``map`` runs in an executor —
worker threads by default, or any ``concurrent.futures.Executor`` (a process pool, Dask's or
Ray's) — while the next items download. At most ``window`` items are in flight, so memory is
bounded by the window, not by the experiment. A failed item or a ``map`` that raises is
reported and never stops the others; ``reduce`` gets the successes and the failures. With
``cache_dir``, each map result is kept on disk under a key of the item id, the analyzer name
and the md5s of its files, so a re-run only maps what is new or changed.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import logging
import os
import pickle
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
    Sequence,
)
from concurrent.futures import Executor
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
import anyio.to_thread

from ._concurrency import BoundedStream, Spawn, aiter_any, gather_bounded
from ._constants import DEFAULT_ANALYZE_WINDOW
from ._query import Query
from ._resources.outputs import Listed, listed_ahead, simulations_of
from .errors import CompsError
from .models import Experiment, Simulation, SimulationState, WorkItem
from .models.outputs import OutputFileMetadata

if TYPE_CHECKING:
    from ._resources.peers import Peers

__all__ = [
    "Analysis",
    "AnalysisFailedError",
    "AnalysisFailure",
    "AnalysisReport",
    "AnalyzedItem",
    "Analyzer",
    "Item",
    "Source",
    "parse_file",
]

logger = logging.getLogger(__name__)

Item = Simulation | WorkItem  # what an analysis maps
Source = Experiment | UUID | str | Query | Iterable[Item]  # what an analysis covers
# What map and filter see of a listed simulation (tags above all).
_WITH_TAGS = Query().select(["id", "name", "state", "error_message"]).select_children(["tags"])


class Analyzer:
    """Subclass and override ``map`` and ``reduce`` (idmtools' ``IAnalyzer``, simplified).

    The cache (``cache_dir``) keys results on ``name``: give a new name (or clear the cache)
    when ``map`` changes what it returns.

    ``filenames`` are glob patterns on output paths (``output/InsetChart.json``,
    ``output/*.csv``); ``map(data, item)`` gets ``{path: content}`` — JSON parsed, CSV as a list
    of row dicts, anything else bytes; ``parse = False`` gives bytes for everything — and the
    simulation or work item (with its tags). ``reduce(results, failures)`` runs once with
    ``{item id: map result}`` and the failures. ``filter(item)`` skips items (by tags, state,
    ...); ``initialize()`` runs once before anything. ``name`` tells analyzers apart in reports
    and in the cache (the class name by default). With a process pool, analyzers must pickle.
    """

    filenames: Sequence[str] = ()
    parse: bool = True

    @property
    def name(self) -> str:
        """How reports and the cache tell this analyzer apart."""
        return type(self).__name__

    def initialize(self) -> None:
        """Called once, before the first item."""

    def filter(self, item: Item) -> bool:
        """Whether to analyze ``item`` (all by default)."""
        return True

    def map(self, data: dict[str, Any], item: Item) -> Any:
        """One item's result, from its files."""
        raise NotImplementedError(f"{self.name}.map")

    def reduce(self, results: Mapping[UUID, Any], failures: Sequence[AnalysisFailure]) -> Any:
        """The answer, from every item's result (and what failed)."""
        return dict(results)


@dataclass(frozen=True)
class AnalysisFailure:
    """An item an analyzer could not map: its listing or a file failed, or ``map`` raised."""

    item_id: UUID
    analyzer: str  # "" when the item's files could not be read (every analyzer missed it)
    error: BaseException

    def __str__(self) -> str:
        who = f"{self.analyzer} on " if self.analyzer else ""
        return f"{who}{self.item_id}: {type(self.error).__name__}: {self.error}"


@dataclass(frozen=True)
class AnalyzedItem:
    """One item's outcome for one analyzer, as it comes (``async for`` over an ``Analysis``)."""

    item_id: UUID
    analyzer: str
    result: Any = None
    error: BaseException | None = None
    cached: bool = False  # the result came from the cache; nothing was downloaded for it

    @property
    def ok(self) -> bool:
        """Whether ``map`` produced ``result``."""
        return self.error is None


@dataclass
class AnalysisReport:
    """What ``analyze`` returns: each analyzer's ``reduce`` answer, and every failure."""

    reduced: dict[str, Any] = field(default_factory=dict)
    failures: list[AnalysisFailure] = field(default_factory=list)
    items: int = 0  # items analyzed (by at least one analyzer)
    cached: int = 0  # (item, analyzer) results taken from the cache


class AnalysisFailedError(CompsError):
    """``fail_fast=True`` and an item failed."""

    def __init__(self, failure: AnalysisFailure) -> None:
        self.failure = failure
        super().__init__(f"analysis stopped at the first failure: {failure}")


def parse_file(path: str, data: bytes) -> Any:
    """What ``map`` gets for a file: JSON parsed, CSV as a list of row dicts, else bytes."""
    lowered = path.lower()
    if lowered.endswith(".json"):
        return json.loads(data)
    if lowered.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    return data


def _map_one(analyzer: Analyzer, files: dict[str, bytes], item: Item) -> Any:
    """Parse and map in the executor (a thread or another process): CPU work off the loop."""
    data = {p: parse_file(p, d) for p, d in files.items()} if analyzer.parse else dict(files)
    return analyzer.map(data, item)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    lowered = path.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


class _Cache:
    """Map results on disk, one pickle per (analyzer, item, md5s of its files)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, analyzer: str, item: UUID, files: Sequence[OutputFileMetadata]) -> Path:
        signature = ";".join(sorted(f"{f.path}={f.md5 or f.length}" for f in files))
        digest = hashlib.sha256(f"{analyzer}|{item}|{signature}".encode()).hexdigest()[:32]
        return self.root / analyzer / f"{item}-{digest}.pickle"

    def get(self, path: Path) -> tuple[bool, Any]:
        try:
            return True, pickle.loads(path.read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError):
            return False, None

    def put(self, path: Path, result: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_bytes(pickle.dumps(result))
        scratch.replace(path)  # all or nothing: a crash never leaves half a result


class Analysis:
    """One analysis (``Session.analyze``): ``await`` it for the ``AnalysisReport``, or
    ``async for`` over it for each item's outcome as it comes (no reduce) — as
    ``async with s.analyze(...) as outcomes: async for outcome in outcomes``, leaving the block
    stops the remaining work and returns once it has stopped. Bad input is refused here,
    before anything is sent."""

    def __init__(
        self,
        resources: Peers,
        spawn: Spawn,
        source: Source,
        analyzers: Sequence[Analyzer],
        *,
        executor: Executor | None = None,
        window: int = DEFAULT_ANALYZE_WINDOW,
        cache_dir: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        analyze_failed: bool = False,
        on_item: Callable[[AnalyzedItem], object] | None = None,
    ) -> None:
        _check(analyzers, window)
        self.resources = resources
        self.spawn = spawn
        self.source = source
        self.analyzers = list(analyzers)
        self.executor = executor
        self.window = window
        self.cache_dir = cache_dir
        self.fail_fast = fail_fast
        self.analyze_failed = analyze_failed
        self.on_item = on_item
        self._open: AsyncGenerator[AnalyzedItem, None] | None = None

    def __await__(self) -> Generator[Any, None, AnalysisReport]:
        return self.report().__await__()

    def __aiter__(self) -> AsyncGenerator[AnalyzedItem, None]:
        return self._outcomes()

    async def __aenter__(self) -> AsyncGenerator[AnalyzedItem, None]:
        self._open = self._outcomes()
        return self._open

    async def __aexit__(self, *exc: object) -> None:
        if self._open is not None:
            await self._open.aclose()  # stops the remaining work, and waits for it
            self._open = None

    async def report(self) -> AnalysisReport:
        """Map every item, then ``reduce`` each analyzer once: the answers and the failures."""
        analyzers, on_item = self.analyzers, self.on_item
        results: dict[str, dict[UUID, Any]] = {a.name: {} for a in analyzers}
        report = AnalysisReport()
        seen: set[UUID] = set()
        async with aclosing(self._outcomes()) as outcomes:
            async for outcome in outcomes:
                seen.add(outcome.item_id)
                report.cached += outcome.cached
                if outcome.ok:
                    results[outcome.analyzer][outcome.item_id] = outcome.result
                else:
                    assert outcome.error is not None
                    logger.warning(
                        "%s on %s failed: %s", outcome.analyzer, outcome.item_id, outcome.error
                    )
                    report.failures.append(
                        AnalysisFailure(outcome.item_id, outcome.analyzer, outcome.error)
                    )
                if on_item is not None:
                    on_item(outcome)
        report.items = len(seen)
        for analyzer in analyzers:
            failures = [f for f in report.failures if f.analyzer == analyzer.name]
            report.reduced[analyzer.name] = await anyio.to_thread.run_sync(
                analyzer.reduce, results[analyzer.name], failures
            )
        return report

    async def _outcomes(self) -> AsyncGenerator[AnalyzedItem, None]:
        resources, source, analyzers = self.resources, self.source, self.analyzers
        executor, window, fail_fast = self.executor, self.window, self.fail_fast
        cache_dir, analyze_failed = self.cache_dir, self.analyze_failed
        for analyzer in analyzers:
            await anyio.to_thread.run_sync(analyzer.initialize)
        cache = _Cache(Path(cache_dir)) if cache_dir is not None else None
        waiting = anyio.CapacityLimiter(window)  # threads that wait on executor futures

        async def run_map(analyzer: Analyzer, files: dict[str, bytes], item: Item) -> Any:
            if executor is None:
                return await anyio.to_thread.run_sync(
                    _map_one, analyzer, files, item, limiter=waiting
                )
            future = executor.submit(_map_one, analyzer, files, item)
            return await anyio.to_thread.run_sync(future.result, limiter=waiting)

        async def planned() -> AsyncGenerator[_Planned, None]:
            async with aclosing(_items(resources, source)) as items:
                async for item in items:  # each filter asked once per item
                    yield _Planned(item, [a for a in analyzers if a.filter(item)])

        def skipped(item: Item) -> bool:  # a failed simulation, when failures are not analyzed
            failed = isinstance(item, Simulation) and item.state == SimulationState.Failed
            return failed and not analyze_failed

        async def one(
            listed: Listed[_Planned], emit: Callable[[AnalyzedItem], Awaitable[None]]
        ) -> None:
            item, wanted = listed.item.item, listed.item.analyzers
            assert item.id is not None
            if not wanted:
                return
            if skipped(item):
                assert isinstance(item, Simulation)
                error = RuntimeError(f"the simulation failed: {item.error_message or 'no message'}")
                for analyzer in wanted:
                    await emit(AnalyzedItem(item.id, analyzer.name, error=error))
                return
            if listed.error is not None:
                for analyzer in wanted:
                    await emit(AnalyzedItem(item.id, analyzer.name, error=listed.error))
                return
            listing = listed.files
            chosen = {
                a.name: [m for p, m in listing.items() if _matches(p, a.filenames)] for a in wanted
            }
            todo: list[tuple[Analyzer, Path | None]] = []
            for analyzer in wanted:
                metas = chosen[analyzer.name]
                if not metas:
                    missing = FileNotFoundError(f"no output matches {list(analyzer.filenames)}")
                    await emit(AnalyzedItem(item.id, analyzer.name, error=missing))
                    continue
                slot = cache.path(analyzer.name, item.id, metas) if cache is not None else None
                if cache is not None and slot is not None:  # the same item, analyzer and files
                    hit, result = await anyio.to_thread.run_sync(cache.get, slot)
                    if hit:
                        await emit(AnalyzedItem(item.id, analyzer.name, result, cached=True))
                        continue
                todo.append((analyzer, slot))
            if not todo:
                return
            needed = list({m.path: m for a, _ in todo for m in chosen[a.name]}.values())
            try:  # an item's files are read at once; the window bounds how many items do so
                read = await gather_bounded(needed, resources.outputs.read_listed, len(needed))
                contents = {m.path: data for m, data in zip(needed, read, strict=True)}
            except (CompsError, OSError, ValueError) as exc:
                for analyzer, _ in todo:
                    await emit(AnalyzedItem(item.id, analyzer.name, error=exc))
                return
            for analyzer, slot in todo:
                files = {m.path: contents[m.path] for m in chosen[analyzer.name]}
                try:
                    result = await run_map(analyzer, files, item)
                except Exception as exc:  # the user's map raised: reported, never fatal
                    await emit(AnalyzedItem(item.id, analyzer.name, error=exc))
                    continue
                if cache is not None and slot is not None:
                    await anyio.to_thread.run_sync(cache.put, slot, result)
                await emit(AnalyzedItem(item.id, analyzer.name, result))

        listings = listed_ahead(
            lambda planned: resources.outputs.info(planned.item),
            self.spawn,
            planned(),
            window,
            needs=lambda planned: bool(planned.analyzers) and not skipped(planned.item),
        )
        outcomes = BoundedStream(self.spawn, listings, one, window, window * len(analyzers))
        async with aclosing(outcomes):
            async for outcome in outcomes:
                if fail_fast and not outcome.ok:
                    assert outcome.error is not None
                    raise AnalysisFailedError(
                        AnalysisFailure(outcome.item_id, outcome.analyzer, outcome.error)
                    )
                yield outcome


def _check(analyzers: Sequence[Analyzer], window: int) -> None:
    """Bad input fails before anything is sent."""
    if not analyzers:
        raise ValueError("give at least one analyzer")
    for analyzer in analyzers:
        if not isinstance(analyzer, Analyzer):
            raise TypeError(f"{analyzer!r} is not an Analyzer")
        if not analyzer.filenames:
            raise ValueError(f"{analyzer.name} names no filenames to analyze")
    if len({a.name for a in analyzers}) != len(analyzers):
        raise ValueError("analyzers need distinct names (the cache and reports key on them)")
    if window < 1:
        raise ValueError("window must be at least 1")


@dataclass(frozen=True)
class _Planned:
    """An item and the analyzers whose ``filter`` took it."""

    item: Item
    analyzers: list[Analyzer]


def _items(resources: Peers, source: Source) -> AsyncGenerator[Item, None]:
    """An experiment's or a query's simulations (listed with their tags, as harvest lists
    them), or the simulations and work items given."""
    if isinstance(source, Experiment | UUID | str | Query):
        return simulations_of(resources.simulations, source, _WITH_TAGS)
    return aiter_any(source)
