"""A blocking twin of ``Session`` for synchronous code (pyCOMPS-style scripts, Jupyter).

    from comps_async.sync import Session

    with Session("https://comps.idmod.org", username="me", password=...) as s:
        exp = s.experiments.create(ca.Experiment(name="x"))
        s.simulations.save_all(sims)
        s.wait(experiment_id=exp.id)
        for got in s.outputs.harvest(exp.id, ["output/InsetChart.json"], "out/"):
            ...

Every resource and method of the async Session has a typed twin here, with the same name,
arguments, types and docstring (``tests/test_sync_and_examples.py`` compares the two surfaces);
async iterators (``iterate``, ``watch``) become generators, and ``harvest`` and ``analyze`` are
context managers as on the async side.

Where callbacks run (one rule): a callback that may call the session back (``after_batch``)
is a plain function run in a worker thread; every other callback (``on_progress``,
``on_change``, ``on_item``) is a notification called in the session's event-loop thread —
quick, and never calling the session (that raises ``RuntimeError`` at once, no deadlock).

Each sync Session runs its own event loop in one background thread (an anyio blocking portal),
so it works where a loop is already running (Jupyter) as well as in plain scripts. Anything
used after ``close()`` raises ``SessionClosedError``.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Executor
from contextlib import AbstractContextManager, suppress
from functools import partial
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar
from uuid import UUID

import anyio.to_thread
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from pydantic import SecretStr

from ._constants import (
    DEFAULT_ANALYZE_WINDOW,
    DEFAULT_HARVEST_CONCURRENCY,
    DEFAULT_LIMITS,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_OPERATION_CONCURRENCY,
    DEFAULT_TIMEOUT,
)
from ._query import Query
from ._resources.asset_collections import DEFAULT_EXCLUDE, AssetCollections
from ._resources.base import EntityResource, IdLike, StatefulResource
from ._resources.entities import (
    B,
    Experiments,
    J,
    Rerun,
    Simulations,
    Suites,
    WorkItems,
    _BatchSaved,
    _JsonSaved,
)
from ._resources.outputs import Harvest, Harvested, OutputOwner, Outputs
from ._session import Session as AsyncSession
from ._transfer.assets import BytesProgressCallback
from ._transfer.batching import BatchLimits, ProgressCallback
from ._transfer.download import DownloadSettings
from ._transfer.upload import UploadSettings
from ._waiting import WaitSettings, WaitStatus
from .analyze import Analysis, AnalysisReport, AnalyzedItem, Analyzer, Source
from .auth import CredentialPrompt
from .models import (
    AssetCollection,
    AssetCollectionFile,
    Entity,
    Experiment,
    OutputFileMetadata,
    RelationType,
    Simulation,
    Suite,
    WorkItem,
)
from .models._base import Tags
from .pipeline import Policy
from .policies.retry import RetryPolicy

__all__ = ["Session", "SessionClosedError", "SyncAnalysis"]

P = ParamSpec("P")
T = TypeVar("T")
E = TypeVar("E", bound=Entity)
F = TypeVar("F", bound=Callable[..., Any])


class SessionClosedError(RuntimeError):
    """A sync Session (or an iterator it returned) was used after ``close()``."""


def _twin(original: Callable[..., Any], doc: str | None = None) -> Callable[[F], F]:
    """Give a sync method the docstring of the async one it forwards to (``help()`` shows it),
    or ``doc`` where the async one speaks of ``await`` and ``async with`` (the parity test reads
    every twin's docstring for them)."""

    def copy(method: F) -> F:
        method.__doc__ = doc or original.__doc__
        return method

    return copy


class _Loop:
    """The sync Session's event loop (in its own thread), and the one place calls cross it."""

    def __init__(self, portal: BlockingPortal) -> None:
        self._portal = portal
        self.closed = False

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the loop and return its result."""
        if self.closed:
            raise SessionClosedError(
                "this Session is closed; open a new one (with Session(...) as s: ...)"
            )
        return self._portal.call(partial(fn, *args, **kwargs))

    def iterate(self, source: Callable[[], AsyncIterator[T]]) -> Generator[T, None, None]:
        """A generator over an async iterator, each step run in the loop."""
        iterator = self.call(_started, source)
        try:
            while True:
                try:
                    yield self.call(iterator.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None and not self.closed:
                self.call(closer)


async def _started(source: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
    return source()  # created inside the loop: some iterators bind to it when made


async def _made(make: Callable[[], T]) -> T:
    return make()  # (likewise: an object whose work starts in the loop)


def _blocking(callback: Callable[[list[T]], object]) -> Callable[[list[T]], Awaitable[object]]:
    """A plain callback for the async engine: run in a worker thread, never on the loop."""

    async def run(batch: list[T]) -> object:
        return await anyio.to_thread.run_sync(callback, batch)

    return run


class _Entities(Generic[E]):
    """What every resource offers (``EntityResource``)."""

    def __init__(self, loop: _Loop, resource: EntityResource[E]) -> None:
        self._loop = loop
        self._resource = resource

    @_twin(EntityResource.get)
    def get(
        self,
        entity_id: IdLike,
        *,
        children: Sequence[str] | None = None,
        query: Query | None = None,
    ) -> E:
        return self._loop.call(self._resource.get, entity_id, children=children, query=query)

    @_twin(EntityResource.get_many)
    def get_many(
        self,
        ids: Iterable[IdLike],
        *,
        children: Sequence[str] | None = None,
        query: Query | None = None,
    ) -> builtins.list[E]:
        return self._loop.call(self._resource.get_many, ids, children=children, query=query)

    @_twin(EntityResource.list)
    def list(self, query: Query | None = None, *, page_size: int | None = None) -> builtins.list[E]:
        return self._loop.call(self._resource.list, query, page_size=page_size)

    @_twin(EntityResource.iterate)
    def iterate(self, query: Query | None = None, *, page_size: int | None = None) -> Iterator[E]:
        return self._loop.iterate(lambda: self._resource.iterate(query, page_size=page_size))

    @_twin(EntityResource.count)
    def count(self, query: Query | None = None) -> int:
        return self._loop.call(self._resource.count, query)

    @_twin(EntityResource.refresh)
    def refresh(self, entity: E) -> E:
        return self._loop.call(self._resource.refresh, entity)

    @_twin(EntityResource.parents)
    def parents(
        self, entity: IdLike, relation: RelationType | None = None
    ) -> builtins.list[WorkItem]:
        return self._loop.call(self._resource.parents, entity, relation)

    @_twin(EntityResource.set_tags)
    def set_tags(self, entity: IdLike, tags: Mapping[str, Any]) -> None:
        self._loop.call(self._resource.set_tags, entity, tags)

    @_twin(EntityResource.merge_tags)
    def merge_tags(self, entity: IdLike, tags: Mapping[str, Any]) -> None:
        self._loop.call(self._resource.merge_tags, entity, tags)

    @_twin(EntityResource.delete_tags)
    def delete_tags(self, entity: IdLike, keys: Iterable[str]) -> None:
        self._loop.call(self._resource.delete_tags, entity, keys)


class _Stateful(_Entities[E]):
    """Commission, cancel and delete (``StatefulResource``)."""

    _resource: StatefulResource[E]

    @_twin(StatefulResource.commission)
    def commission(
        self,
        entities: IdLike | Iterable[IdLike],
        *,
        concurrency: int = DEFAULT_OPERATION_CONCURRENCY,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self._loop.call(
            self._resource.commission, entities, concurrency=concurrency, on_progress=on_progress
        )

    @_twin(StatefulResource.cancel)
    def cancel(
        self,
        entities: IdLike | Iterable[IdLike],
        *,
        concurrency: int = DEFAULT_OPERATION_CONCURRENCY,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self._loop.call(
            self._resource.cancel, entities, concurrency=concurrency, on_progress=on_progress
        )

    @_twin(StatefulResource.delete)
    def delete(
        self,
        entities: IdLike | Iterable[IdLike],
        *,
        expire_now: bool = False,
        concurrency: int = DEFAULT_OPERATION_CONCURRENCY,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self._loop.call(
            self._resource.delete,
            entities,
            expire_now=expire_now,
            concurrency=concurrency,
            on_progress=on_progress,
        )


class _JsonSavedTwin(_Stateful[J]):
    """Suites and experiments: saved one by one as JSON (``_JsonSaved``)."""

    _resource: _JsonSaved[J]

    @_twin(_JsonSaved.save)
    def save(self, entity: J, *, key: str | None = None) -> J:
        return self._loop.call(self._resource.save, entity, key=key)

    @_twin(_JsonSaved.create)
    def create(self, entity: J, *, key: str | None = None) -> J:
        return self._loop.call(self._resource.create, entity, key=key)

    @_twin(_JsonSaved.stats)
    def stats(self, entity: IdLike) -> dict[str, int]:
        return self._loop.call(self._resource.stats, entity)


class SyncSuites(_JsonSavedTwin[Suite]):
    """``s.suites``."""

    _resource: Suites

    @_twin(Suites.experiments)
    def experiments(self, suite: IdLike, query: Query | None = None) -> builtins.list[Experiment]:
        return self._loop.call(self._resource.experiments, suite, query)


class SyncExperiments(_JsonSavedTwin[Experiment]):
    """``s.experiments``."""

    _resource: Experiments

    @_twin(Experiments.simulations)
    def simulations(
        self, experiment: IdLike, query: Query | None = None
    ) -> builtins.list[Simulation]:
        return self._loop.call(self._resource.simulations, experiment, query)


class _BatchSavedTwin(_Stateful[B]):
    """Simulations and work items: saved in multipart batches (``_BatchSaved``)."""

    _resource: _BatchSaved[B]

    @_twin(_BatchSaved.save)
    def save(self, entity: B, *, key: str | None = None) -> B:
        return self._loop.call(self._resource.save, entity, key=key)

    @_twin(_BatchSaved.create)
    def create(self, entity: B, *, key: str | None = None) -> B:
        return self._loop.call(self._resource.create, entity, key=key)


class SyncSimulations(_BatchSavedTwin[Simulation]):
    """``s.simulations``."""

    _resource: Simulations

    @_twin(Simulations.save_all)
    def save_all(
        self,
        entities: Iterable[Simulation],
        *,
        concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        limits: BatchLimits | None = None,
        commission: bool = False,
        key: str | None = None,
    ) -> int:
        return self._loop.call(
            self._resource.save_all,
            entities,
            concurrency=concurrency,
            on_progress=on_progress,
            limits=limits,
            commission=commission,
            key=key,
        )

    @_twin(Simulations.clone)
    def clone(
        self, simulation: IdLike, *, experiment: IdLike | None = None, key: str | None = None
    ) -> Simulation:
        return self._loop.call(self._resource.clone, simulation, experiment=experiment, key=key)

    @_twin(Simulations.rerun_failed)
    def rerun_failed(
        self,
        experiment: IdLike,
        *,
        commission: bool = True,
        delete_old: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> Rerun:
        return self._loop.call(
            self._resource.rerun_failed,
            experiment,
            commission=commission,
            delete_old=delete_old,
            on_progress=on_progress,
        )


class SyncWorkItems(_BatchSavedTwin[WorkItem]):
    """``s.work_items``."""

    _resource: WorkItems

    @_twin(WorkItems.save_all)
    def save_all(
        self,
        entities: Iterable[WorkItem],
        *,
        concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        limits: BatchLimits | None = None,
        after_batch: Callable[[builtins.list[WorkItem]], object] | None = None,
        key: str | None = None,
    ) -> int:
        """Like the async ``save_all``; ``after_batch`` is a plain function here, run in a
        worker thread after each batch lands."""
        return self._loop.call(
            self._resource.save_all,
            entities,
            concurrency=concurrency,
            on_progress=on_progress,
            limits=limits,
            after_batch=_blocking(after_batch) if after_batch is not None else None,
            key=key,
        )

    @_twin(WorkItems.add_related)
    def add_related(
        self,
        work_item: IdLike,
        related: Entity,
        relation: RelationType = RelationType.DependsOn,
    ) -> None:
        self._loop.call(self._resource.add_related, work_item, related, relation)

    @_twin(WorkItems.related)
    def related(
        self,
        work_item: IdLike,
        *,
        object_type: str | type[Entity] | None = None,
        relation: RelationType | None = None,
    ) -> dict[str, builtins.list[Entity]]:
        return self._loop.call(
            self._resource.related, work_item, object_type=object_type, relation=relation
        )


class SyncAssetCollections(_Entities[AssetCollection]):
    """``s.asset_collections``."""

    _resource: AssetCollections

    @_twin(AssetCollections.create)
    def create(
        self,
        files: Iterable[AssetCollectionFile],
        *,
        tags: Tags | None = None,
        on_progress: BytesProgressCallback | None = None,
        key: str | None = None,
    ) -> AssetCollection:
        return self._loop.call(
            self._resource.create, files, tags=tags, on_progress=on_progress, key=key
        )

    @_twin(AssetCollections.create_from_dir)
    def create_from_dir(
        self,
        directory: str | PathLike[str],
        *,
        tags: Tags | None = None,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = DEFAULT_EXCLUDE,
        on_progress: BytesProgressCallback | None = None,
        key: str | None = None,
    ) -> AssetCollection:
        return self._loop.call(
            self._resource.create_from_dir,
            directory,
            tags=tags,
            include=include,
            exclude=exclude,
            on_progress=on_progress,
            key=key,
        )

    @_twin(AssetCollections.download)
    def download(
        self,
        collection: IdLike,
        dest: str | PathLike[str],
        *,
        paths: Iterable[str] | None = None,
        overwrite: bool = False,
    ) -> builtins.list[Path]:
        return self._loop.call(
            self._resource.download, collection, dest, paths=paths, overwrite=overwrite
        )

    @_twin(AssetCollections.zip)
    def zip(
        self,
        collection: IdLike,
        dest_file: str | PathLike[str],
        *,
        extract_to: str | PathLike[str] | None = None,
    ) -> Path:
        return self._loop.call(self._resource.zip, collection, dest_file, extract_to=extract_to)


class SyncOutputs:
    """``s.outputs``."""

    def __init__(self, loop: _Loop, outputs: Outputs) -> None:
        self._loop = loop
        self._outputs = outputs

    @_twin(Outputs.info)
    def info(
        self,
        entity: OutputOwner,
        paths: Iterable[str] | None = None,
        *,
        hpc_job: UUID | str | None = None,
    ) -> dict[str, OutputFileMetadata]:
        return self._loop.call(self._outputs.info, entity, paths, hpc_job=hpc_job)

    @_twin(Outputs.read)
    def read(self, entity: OutputOwner, path: str) -> bytes:
        return self._loop.call(self._outputs.read, entity, path)

    @_twin(Outputs.read_listed)
    def read_listed(self, meta: OutputFileMetadata) -> bytes:
        return self._loop.call(self._outputs.read_listed, meta)

    @_twin(Outputs.read_range)
    def read_range(
        self, entity: OutputOwner, path: str, start: int, end: int | None = None
    ) -> bytes:
        return self._loop.call(self._outputs.read_range, entity, path, start, end)

    @_twin(Outputs.tail)
    def tail(self, entity: OutputOwner, path: str, nbytes: int = 1024) -> str:
        return self._loop.call(self._outputs.tail, entity, path, nbytes)

    @_twin(Outputs.download)
    def download(
        self,
        entity: OutputOwner,
        paths: Iterable[str] | None,
        dest: str | PathLike[str],
        *,
        overwrite: bool = False,
        hpc_job: UUID | str | None = None,
    ) -> builtins.list[Path]:
        return self._loop.call(
            self._outputs.download, entity, paths, dest, overwrite=overwrite, hpc_job=hpc_job
        )

    @_twin(
        Outputs.harvest,
        """Fetch the outputs matching glob ``patterns`` of many simulations to
        ``dest/<sim-id>/<path>``, yielding each file as it lands so analysis can start at once.
        One listing per simulation, listed ahead of the downloads; a simulation or file that
        fails is reported as a ``Harvested`` with ``error`` and never stops the others;
        re-running skips complete files. Memory is bounded by ``concurrency``.

        Use it as ``with s.outputs.harvest(...) as results: for got in results``: leaving the
        block (a ``break``, an error) stops the remaining work and returns once it has
        stopped.""",
    )
    def harvest(
        self,
        source: Experiment | UUID | str | Query | Iterable[Simulation],
        patterns: Sequence[str],
        dest: str | PathLike[str],
        *,
        concurrency: int = DEFAULT_HARVEST_CONCURRENCY,
        overwrite: bool = False,
        case_sensitive: bool = False,
    ) -> SyncHarvest:
        harvest = self._loop.call(
            _made,
            lambda: self._outputs.harvest(
                source,
                patterns,
                dest,
                concurrency=concurrency,
                overwrite=overwrite,
                case_sensitive=case_sensitive,
            ),
        )
        return SyncHarvest(self._loop, harvest)

    @_twin(Outputs.zip)
    def zip(
        self,
        entity: OutputOwner,
        paths: Iterable[str] | None,
        dest_file: str | PathLike[str],
        *,
        extract_to: str | PathLike[str] | None = None,
        hpc_job: UUID | str | None = None,
    ) -> Path:
        return self._loop.call(
            self._outputs.zip, entity, paths, dest_file, extract_to=extract_to, hpc_job=hpc_job
        )


class SyncHarvest:
    """The results of ``harvest``: an iterator of ``Harvested`` and a context manager that
    closes it (stopping the remaining downloads) when the block is left."""

    def __init__(self, loop: _Loop, harvest: Harvest) -> None:
        self._loop = loop
        self._harvest = harvest
        self._results = loop.iterate(lambda: harvest)

    @property
    def simulations_listed(self) -> int:
        """Simulations listed so far (a progress bar's total grows with it)."""
        return self._harvest.simulations_listed

    @property
    def files_matched(self) -> int:
        """Files matched so far, over the simulations listed."""
        return self._harvest.files_matched

    def __iter__(self) -> Iterator[Harvested]:
        return self._results

    def __next__(self) -> Harvested:
        return next(self._results)

    def close(self) -> None:
        """Stop the remaining work and wait until it has stopped (idempotent)."""
        self._results.close()  # (closes the async harvest in the loop, if still open)
        if not self._loop.closed:
            self._loop.call(self._harvest.aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # dropped unclosed: stop its work (in the loop, not here)
        with suppress(Exception):
            self.close()


class SyncAnalysis:
    """``s.analyze(...)``: ``.report()`` for the ``AnalysisReport``, or iterate over it for
    each item's outcome as it comes (no reduce); as ``with s.analyze(...) as outcomes: for
    outcome in outcomes``, leaving the block stops the remaining work."""

    def __init__(self, loop: _Loop, analysis: Analysis) -> None:
        self._loop = loop
        self._analysis = analysis
        self._open: Generator[AnalyzedItem, None, None] | None = None

    def report(self) -> AnalysisReport:
        """Map every item, then reduce each analyzer once: the answers and the failures."""
        return self._loop.call(self._analysis.report)

    def __iter__(self) -> Generator[AnalyzedItem, None, None]:
        return self._loop.iterate(self._analysis.__aiter__)

    def __enter__(self) -> Generator[AnalyzedItem, None, None]:
        self._open = iter(self)
        return self._open

    def __exit__(self, *exc: object) -> None:
        if self._open is not None:
            self._open.close()  # a generator: closing it closes the async outcomes
            self._open = None


class Session:
    """Blocking ``Session``: the same arguments, resources and methods as the async one; use
    it in a ``with`` block or call ``close()``. ``backend`` picks the event loop it runs
    (``"asyncio"``, the default, or ``"trio"``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | SecretStr | None = None,
        username: str | None = None,
        password: str | SecretStr | None = None,
        credential_prompt: CredentialPrompt | None = None,
        policies: Sequence[Policy] | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str = True,
        token_cache_dir: str | os.PathLike[str] | None = None,
        download: DownloadSettings | None = None,
        upload: UploadSettings | None = None,
        fingerprint_cache: str | os.PathLike[str] | bool = True,
        wait: WaitSettings | None = None,
        idempotency_tags: bool = True,
        backend: str = "asyncio",
    ) -> None:
        session = AsyncSession(
            url,
            token=token,
            username=username,
            password=password,
            credential_prompt=credential_prompt,
            policies=policies,
            retry=retry,
            timeout=timeout,
            limits=limits,
            max_concurrent_requests=max_concurrent_requests,
            transport=transport,
            verify=verify,
            token_cache_dir=token_cache_dir,
            download=download,
            upload=upload,
            fingerprint_cache=fingerprint_cache,
            wait=wait,
            idempotency_tags=idempotency_tags,
        )  # arguments are checked here, before a thread is started
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(backend)
        portal = self._portal_cm.__enter__()
        try:
            # One task owns the async session from enter to exit, as anyio requires.
            self._session_cm = portal.wrap_async_context_manager(session)
            self._session = self._session_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self._loop = _Loop(portal)
        self.host = session.host
        self.suites = SyncSuites(self._loop, session.suites)
        self.experiments = SyncExperiments(self._loop, session.experiments)
        self.simulations = SyncSimulations(self._loop, session.simulations)
        self.work_items = SyncWorkItems(self._loop, session.work_items)
        self.asset_collections = SyncAssetCollections(self._loop, session.asset_collections)
        self.outputs = SyncOutputs(self._loop, session.outputs)

    def __repr__(self) -> str:
        return f"sync.Session({self.host.base!r})"

    @_twin(AsyncSession.request)
    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        return self._loop.call(self._session.request, method, path, **options)

    @_twin(AsyncSession.wait)
    def wait(
        self,
        *,
        experiment_id: IdLike | None = None,
        simulation_ids: Iterable[IdLike] | None = None,
        work_item_id: IdLike | None = None,
        timeout: float | None = None,
        on_change: Callable[[WaitStatus], object] | None = None,
    ) -> WaitStatus:
        return self._loop.call(
            self._session.wait,
            experiment_id=experiment_id,
            simulation_ids=simulation_ids,
            work_item_id=work_item_id,
            timeout=timeout,
            on_change=on_change,
        )

    @_twin(AsyncSession.watch)
    def watch(
        self,
        *,
        experiment_id: IdLike | None = None,
        simulation_ids: Iterable[IdLike] | None = None,
        work_item_id: IdLike | None = None,
    ) -> Iterator[WaitStatus]:
        return self._loop.iterate(
            lambda: self._session.watch(
                experiment_id=experiment_id,
                simulation_ids=simulation_ids,
                work_item_id=work_item_id,
            )
        )

    @_twin(
        AsyncSession.analyze,
        """Analyze the outputs of an experiment's simulations (or the items, or a query's) with
        idmtools-style ``Analyzer``s: ``map`` per item in ``executor`` (worker threads by
        default) while downloads go on, ``reduce`` once per analyzer. ``.report()`` for the
        ``AnalysisReport``, or iterate over it (``with s.analyze(...) as outcomes``) for each
        item's outcome as it comes. Failures are reported, never fatal unless ``fail_fast``;
        ``cache_dir`` keeps map results so a re-run maps only what is new.""",
    )
    def analyze(
        self,
        source: Source,
        analyzers: Sequence[Analyzer],
        *,
        executor: Executor | None = None,
        window: int = DEFAULT_ANALYZE_WINDOW,
        cache_dir: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        analyze_failed: bool = False,
        on_item: Callable[[AnalyzedItem], object] | None = None,
    ) -> SyncAnalysis:
        analysis = self._session.analyze(
            source,
            analyzers,
            executor=executor,
            window=window,
            cache_dir=cache_dir,
            fail_fast=fail_fast,
            analyze_failed=analyze_failed,
            on_item=on_item,
        )
        return SyncAnalysis(self._loop, analysis)

    @_twin(AsyncSession.environments)
    def environments(self) -> builtins.list[str]:
        return self._loop.call(self._session.environments)

    @_twin(AsyncSession.environment)
    def environment(self, name: str) -> dict[str, Any]:
        return self._loop.call(self._session.environment, name)

    @_twin(AsyncSession.environment_macros)
    def environment_macros(self, name: str) -> dict[str, str]:
        return self._loop.call(self._session.environment_macros, name)

    def close(self) -> None:
        """Close the async session and stop its event loop thread (idempotent)."""
        if self._loop.closed:
            return
        try:
            self._session_cm.__exit__(None, None, None)
        finally:
            self._loop.closed = True
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
