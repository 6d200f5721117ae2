"""The five entity resources of a Session."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from uuid import UUID

from .._capabilities import StatsForm
from .._query import Query
from .._responses import json_body, json_list, parse_ids, response_uuid
from .._transfer.batching import BatchLimits, BatchSaver, ProgressCallback
from .._transfer.exactly_once import create_json
from ..errors import ApiError, BatchSaveError, MalformedResponseError, OutcomeUnknownError
from ..models import (
    Entity,
    Experiment,
    RelationType,
    Simulation,
    SimulationFile,
    SimulationState,
    Suite,
    WorkItem,
    entity_type,
)
from .base import IdLike, StatefulResource, as_id

if TYPE_CHECKING:
    from .._requester import Requester
    from .._transfer.fingerprints import Hasher
    from .._transfer.upload import Uploader
    from .peers import Peers

from .peers import resource_of

__all__ = ["Experiments", "Simulations", "Suites", "WorkItems"]

J = TypeVar("J", Suite, Experiment)
B = TypeVar("B", Simulation, WorkItem)


class _JsonSaved(StatefulResource[J]):
    """Suites and Experiments are saved as plain JSON, one per request (§8.5)."""

    default_page_size: ClassVar[int] = 1000  # the server caps these lists at 1000 rows

    async def save(self, entity: J, *, key: str | None = None) -> J:
        """Create ``entity`` (its new id is set in place) or update it when it has an id.

        A create is exactly once: the entity gets an idempotency key before it is sent, and an
        answer lost after the server committed is followed by a look-up, not a second create.
        With ``key="..."`` (letters, digits, ``. _ - :``) the key is yours: a re-started script
        that creates with the same key gets the same entity back. Raises ``OutcomeUnknownError``
        if the server could not be asked whether a lost create happened; saving the same object
        (or key) again then finishes the job."""
        if entity.id is not None:
            if key is not None:
                raise ValueError("key= names a create; this entity already has an id")
            response = await self._requester.request(
                "POST", self._plural, json={self._plural: [entity.to_update_wire()]}
            )
            entity.id = parse_ids(response, 1)[0]
            entity.mark_saved()
            return entity
        saved = entity.save_json()
        owner = await self._requester.tokens.user()

        async def post() -> UUID:
            body = b'{"%s":[%s]}' % (self._plural.encode(), create_json(entity, owner, saved))
            # One attempt: create_once retries (and looks up) itself, so retries never stack.
            response = await self._requester.request(
                "POST", self._plural, content=body, headers=_JSON, max_attempts=1
            )
            return parse_ids(response, 1)[0]

        await self._create_one(entity, key, post)
        entity.mark_saved(saved)
        return entity

    async def create(self, entity: J, *, key: str | None = None) -> J:
        """Create a new entity exactly once (see ``save``); refuses one that has an id."""
        if entity.id is not None:
            raise ValueError("this entity already has an id; use save() to update it")
        return await self.save(entity, key=key)

    async def stats(self, entity: IdLike) -> dict[str, int]:
        """Simulation counts per state in one request (the dashboard's Stats, §12).

        Inferred: the COMPS web dashboard has used two forms, ``GET /{Plural}/{id}/Stats`` and
        ``GET /{Plural}?Id={id}&statsoperations=...``; the first that the server answers is
        remembered. ``MalformedResponseError`` when the answer holds no Stats for the entity:
        that means "stats unavailable", never "no simulations" (``wait`` then counts by
        listing)."""
        entity_id = str(as_id(entity))
        known: dict[StatsForm, tuple[str, dict[str, str]]] = self.stats_forms(entity_id)
        answering: list[StatsForm] = self._requester.capabilities.stats_forms  # doctor's/learned
        # The form this host is known to answer, alone (a 404 then means no such entity);
        # until one is known, each form in turn.
        names: list[StatsForm] = answering[:1] or list(known)
        for index, answered in enumerate(names):
            path, params = known[answered]
            try:
                response = await self._requester.request("GET", path, params=params)
            except ApiError as exc:
                if exc.status in (400, 404, 405, 501) and index + 1 < len(names):
                    continue  # this server knows the other form
                raise
            stats = (json_body(response).get("Stats") or {}).get(entity_id)
            if not isinstance(stats, dict):
                raise MalformedResponseError(
                    f"no Stats for {entity_id} in the answer", url=str(response.request.url)
                )
            if answering[:1] != [answered]:  # the form that answers goes first from now on
                learned = [answered] + [f for f in answering if f != answered]
                await self._requester.learn(stats_forms=learned)
            counts = stats.get("SimulationStateCount") or {}
            if not isinstance(counts, dict):
                raise MalformedResponseError(f"SimulationStateCount is {counts!r}")
            return {str(k): int(v) for k, v in counts.items()}
        raise AssertionError("unreachable")

    def stats_forms(self, entity_id: str) -> dict[StatsForm, tuple[str, dict[str, str]]]:
        """The two Stats requests, by name: ``path`` (older dashboard) and ``query``
        (QueueView 2.6.0), as (path, params)."""
        return {
            "path": (f"{self._plural}/{entity_id}/Stats", {"statsoperations": _STATS_OPERATIONS}),
            "query": (self._plural, {"Id": entity_id, "statsoperations": _STATS_OPERATIONS}),
        }


_STATS_OPERATIONS = "simulationcount,simulationstatecount"
_JSON = {"Content-Type": "application/json"}


class Suites(_JsonSaved[Suite]):
    """``session.suites``."""

    model = Suite

    async def experiments(self, suite: IdLike, query: Query | None = None) -> list[Experiment]:
        """The experiments of a suite (the caller's query is not modified)."""
        q = (query or Query()).where([f"suite_id={as_id(suite)}"])
        return await self._peers.experiments.list(q)


class Experiments(_JsonSaved[Experiment]):
    """``session.experiments``."""

    model = Experiment

    async def simulations(self, experiment: IdLike, query: Query | None = None) -> list[Simulation]:
        """The simulations of an experiment, every page (the caller's query is not modified)."""
        q = (query or Query()).where([f"experiment_id={as_id(experiment)}"])
        return await self._peers.simulations.list(q)


class _BatchSaved(StatefulResource[B]):
    """Simulations and WorkItems are saved in multipart batches (§8.1-8.2)."""

    def __init__(
        self, requester: Requester, peers: Peers, *, hasher: Hasher, uploader: Uploader
    ) -> None:
        super().__init__(requester, peers)
        self._hasher = hasher
        self._uploader = uploader

    async def save(self, entity: B, *, key: str | None = None) -> B:
        """Save one entity (a batch of one); its id is set in place."""
        await self.save_all([entity], concurrency=1, key=key)
        return entity

    async def create(self, entity: B, *, key: str | None = None) -> B:
        """Create one new entity exactly once (``key`` as in ``save_all``). Raises the cause
        itself, or ``OutcomeUnknownError`` if the server could not be asked whether it landed."""
        if entity.id is not None:
            raise ValueError("this entity already has an id; use save() to update it")
        try:
            return await self.save(entity, key=key)
        except BatchSaveError as error:
            cause = error.errors[0] if error.errors else error
            if error.unknown:
                raise OutcomeUnknownError(
                    f"{self.model.__name__} {getattr(entity, 'name', '')!r}",
                    key=entity.idempotency_key,
                    cause=cause,
                ) from cause
            raise cause from None

    async def save_all(
        self,
        entities: Iterable[B] | AsyncIterable[B],
        *,
        concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        limits: BatchLimits | None = None,
        after_batch: Callable[[list[B]], Awaitable[Any]] | None = None,
        key: str | None = None,
    ) -> int:
        """Save many entities in batches of up to 100, exactly once even when answers are lost
        or the call is cancelled and run again. Ids are assigned in place; returns how many
        were saved. Batches in flight: ``concurrency`` if given, else adaptive (from 4, as
        pyCOMPS, up to 16 while throughput grows; fewer when it falls or on 429/503).

        Each new entity gets an idempotency key before it is sent. ``key="calib-iter-3"`` makes
        the keys yours (``<key>/<position>``), so a re-started process that rebuilds the same
        list gets the entities that landed back instead of new ones (one look-up per 100).
        Raises ``BatchSaveError`` (``saved``, ``failed``, ``unknown``) if some could not be
        saved; running the same call again finishes the job without duplicates."""
        saver: BatchSaver[B] = BatchSaver(
            self._requester,
            self.model,  # type: ignore[arg-type]
            hasher=self._hasher,
            uploader=self._uploader,
            concurrency=concurrency,
            limits=limits,
            on_progress=on_progress,
            after_batch=after_batch,
            key=key,
            find_by_key=self.find_by_keys if self._requester.idempotency_tags else None,
        )
        return await saver.run(entities)


# What a clone copies, and the tags that say where a clone came from or where an original went.
_CLONED_CHILDREN = ["tags", "files", "configuration"]
CLONED_FROM_TAG = "ClonedFromSimulation"
RETIRED_TAG = "ClonedToRerun"


def clone_of(sim: Simulation, experiment_id: UUID | None = None) -> Simulation:
    """A new simulation with ``sim``'s configuration, tags (not the SDK's reserved ones) and
    files by md5, tagged ``ClonedFromSimulation``."""
    tags = {k: v for k, v in (sim.tags or {}).items() if not k.startswith("comps_async.")}
    files = [
        SimulationFile.from_md5(
            f.file_name, f.md5_checksum, file_type=f.file_type, description=f.description
        )
        for f in sim.files or []
        if f.md5_checksum is not None
    ]
    return Simulation(
        name=sim.name,
        description=sim.description,
        experiment_id=experiment_id or sim.experiment_id,
        configuration=sim.configuration,
        tags={**tags, CLONED_FROM_TAG: str(sim.id)},
        files=files,
    )


@dataclass
class Rerun:
    """What ``rerun_failed`` did: the new ``clones`` and the failed originals it ``retired``."""

    clones: list[Simulation]
    retired: list[Simulation]


class Simulations(_BatchSaved[Simulation]):
    """``session.simulations``."""

    model = Simulation

    async def save_all(  # type: ignore[override]
        self,
        entities: Iterable[Simulation] | AsyncIterable[Simulation],
        *,
        concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        limits: BatchLimits | None = None,
        commission: bool = False,
        key: str | None = None,
    ) -> int:
        """As ``save_all`` of work items; with ``commission=True`` each experiment is
        commissioned as its batches land, so simulations start while later ones upload
        (commissioning is idempotent: only Created simulations are picked up)."""
        commissioned: set[UUID] = set()

        async def commission_batch(batch: list[Simulation]) -> None:
            experiments = {s.experiment_id for s in batch if s.experiment_id is not None}
            commissioned.update(experiments)
            await self._peers.experiments.commission(experiments)

        saved = await super().save_all(
            entities,
            concurrency=concurrency,
            on_progress=on_progress,
            limits=limits,
            after_batch=commission_batch if commission else None,
            key=key,
        )
        if commission and commissioned:  # catches batches that landed during a commission
            await self._peers.experiments.commission(commissioned)
        return saved

    async def clone(
        self, simulation: IdLike, *, experiment: IdLike | None = None, key: str | None = None
    ) -> Simulation:
        """A saved copy of a simulation (configuration, tags, files by md5; no bytes are
        uploaded), in ``experiment`` or its own, tagged ``ClonedFromSimulation``. ``key``
        makes it exactly once across processes (as ``save_all``)."""
        original = await self.get(simulation, children=_CLONED_CHILDREN)
        target = (await self._peers.experiments.get(experiment)).id if experiment else None
        copy = clone_of(original, target)
        await self.save(copy, key=key)
        return copy

    async def rerun_failed(
        self,
        experiment: IdLike,
        *,
        commission: bool = True,
        delete_old: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> Rerun:
        """Clone an experiment's failed simulations, commission the clones (only them), and
        retire the originals: tagged ``ClonedToRerun``, or deleted with ``delete_old``.

        Exactly once: the clones' keys derive from the failed simulations' ids, so running it
        again after a crash gets the clones that landed back instead of new ones, and failed
        simulations already retired are not cloned again."""
        failed = [
            sim
            for sim in await self._peers.experiments.simulations(
                experiment,
                Query()
                .where([f"state={SimulationState.Failed}"])
                .select_children(_CLONED_CHILDREN),
            )
            if RETIRED_TAG not in (sim.tags or {})
        ]
        clones = [clone_of(sim) for sim in failed]
        if failed:
            ids = ",".join(sorted(str(sim.id) for sim in failed))
            key = "rerun-" + hashlib.md5(ids.encode(), usedforsecurity=False).hexdigest()
            await self.save_all(clones, on_progress=on_progress, key=key)
            if commission:
                await self.commission(clones)
            if delete_old:
                await self.delete(failed)
            else:
                await self._gather(failed, lambda sim: self.merge_tags(sim, {RETIRED_TAG: None}))
        return Rerun(clones=clones, retired=failed)


class WorkItems(_BatchSaved[WorkItem]):
    """``session.work_items``, with relations (§6.4)."""

    model = WorkItem

    async def add_related(
        self, work_item: IdLike, related: Entity, relation: RelationType = RelationType.DependsOn
    ) -> None:
        """Record that ``work_item`` depends on (or created) ``related``."""
        await self._requester.request(
            "POST",
            f"WorkItems/{as_id(work_item)}/Related/{relation.value}/"
            f"{type(related).__name__}/{as_id(related)}",
            idempotent=True,
        )

    async def related(
        self,
        work_item: IdLike,
        *,
        object_type: str | type[Entity] | None = None,
        relation: RelationType | None = None,
    ) -> dict[str, list[Entity]]:
        """Related entities grouped by type name, fetched with one list call per type."""
        params = {}
        if object_type is not None:
            params["RelatedObject"] = entity_type(object_type).__name__
        if relation is not None:
            params["RelationType"] = relation.value
        response = await self._requester.request(
            "GET", f"WorkItems/{as_id(work_item)}/Related", params=params
        )
        by_type: dict[str, list[UUID]] = {}
        for item in json_list(response, "Related"):
            by_type.setdefault(str(item.get("ObjectType")), []).append(
                response_uuid(item.get("Id"), response)
            )
        result: dict[str, list[Entity]] = {}
        for type_name, ids in by_type.items():
            resource = resource_of(self._peers, type_name)
            result[type_name] = list(await resource.get_many(ids))
        return result
