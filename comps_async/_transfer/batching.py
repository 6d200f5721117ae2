"""Batched multipart saves of Simulations and WorkItems (protocol §8.1-8.2), exactly once.

A producer turns the caller's (async) iterable into batches of at most ``max_entities`` and under
``max_bytes``, hashing files off the loop and uploading large files first; up to ``concurrency``
consumers POST batches while the next ones are built. The channel between them is bounded, so
memory is bounded by ``concurrency x batch size``, not by how many entities there are.

Exactly-once: a POST whose answer is lost may or may not have been committed. Every new entity
gets its idempotency key before it is sent (see ``exactly_once.py``); after an ambiguous failure,
and before sending entities that an earlier call may have created, the saver looks them up by
key, keeps the ones that exist and sends only the rest.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence, Sized
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from uuid import UUID

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._concurrency import AdaptiveLimit, achunks, first_error
from .._constants import (
    DEFAULT_SAVE_CONCURRENCY,
    LARGE_FILE_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_ENTITIES,
    MAX_SAVE_CONCURRENCY,
)
from .._responses import parse_ids
from ..errors import ApiError, BatchSaveError, MissingAssetsError, RateLimitedError
from ..models import (
    ContentSource,
    Entity,
    Simulation,
    SimulationState,
    WorkItem,
    WorkItemState,
)
from ..models.files import _AssetFile
from .content import check_readable_file, ensure_md5s, media_type, read_source
from .exactly_once import (
    BATCH_TAG,
    CreateFailed,
    KeyAssigner,
    create_json,
    create_once,
    mark_sent,
)

if TYPE_CHECKING:
    from .._requester import Requester
    from .fingerprints import Hasher
    from .upload import Uploader

__all__ = ["BATCH_TAG", "BatchLimits", "BatchSaver", "FindByKey"]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Entity)
ProgressCallback = Callable[[int, int | None], None]
FindByKey = Callable[[list[E]], Awaitable[dict[int, E]]]
"""Looks entities up by their idempotency keys: {index in the list: the entity on the server}."""


@dataclass(frozen=True)
class BatchLimits:
    """How big a batch may be: pyCOMPS's limits (§8.2), configurable. Files above
    ``large_file_bytes`` are uploaded on their own instead of travelling in a batch. (Attempts
    per batch are the session's ``RetryPolicy(create_attempts=)``.)"""

    max_entities: int = MAX_BATCH_ENTITIES
    max_bytes: int = MAX_BATCH_BYTES
    large_file_bytes: int = LARGE_FILE_BYTES


# Content in a batch is keyed by its md5's 128 bits: an int hashes in C, a UUID in Python (the
# parts bookkeeping asks several times for every entity of a bulk save).
Md5 = int

# Size estimate of pyCOMPS (§8.2): request overhead, per-entity separator, per-part headers.
_REQUEST_OVERHEAD = 4096
_PART_OVERHEAD = 135


@dataclass
class _Batch(Generic[E]):
    entities: list[E] = field(default_factory=list)
    maybe_sent: bool = False  # some entity may exist already (an earlier call, or a caller key)
    bodies: list[bytes] = field(default_factory=list)  # each entity's JSON as sent, encoded once
    saved: list[bytes] = field(default_factory=list)  # what each will hold once saved (mark_saved)
    parts: dict[Md5, tuple[str, bytes]] = field(default_factory=dict)  # content by md5
    uses: list[tuple[Md5, ...]] = field(default_factory=list)  # each entity's, in file order
    sent_shared: bool = False  # the last post attached shared content once
    size: int = _REQUEST_OVERHEAD

    def add(
        self,
        entity: E,
        body: bytes,
        saved: bytes,
        uses: tuple[Md5, ...],
        content: dict[Md5, tuple[str, bytes]],
        cost: int,
        maybe_sent: bool,
    ) -> None:
        """Add an entity whose files use ``uses`` (their content in ``content``)."""
        self.entities.append(entity)
        self.bodies.append(body)
        self.saved.append(saved)
        self.uses.append(uses)
        if uses:
            parts = self.parts
            for md5 in uses:
                if md5 not in parts:
                    parts[md5] = content[md5]
        self.size += cost
        if maybe_sent:
            self.maybe_sent = True

    def extend(self, ready: _Ready[E], start: int, stop: int, size: int) -> None:
        """Add ``ready``'s entities from ``start`` to ``stop``, which attach no content (their
        bodies: ``size`` bytes with separators)."""
        self.entities += ready.entities[start:stop]
        self.bodies += ready.bodies[start:stop]
        self.saved += ready.saved[start:stop]
        self.uses += ready.uses[start:stop]
        self.size += size
        self.maybe_sent = self.maybe_sent or any(ready.maybe_sent[start:stop])

    def shares_parts(self, indexes: list[int]) -> bool:
        """Whether some content is used by more than one file among ``indexes``."""
        used = [md5 for i in indexes for md5 in self.uses[i]]
        return len(used) != len(set(used))


@dataclass
class _Ready(Generic[E]):
    """A chunk of entities ready to batch, in lists side by side: a container per entity would
    be one more object per entity for the garbage collector to count and scan (a tuple of ints,
    as ``uses`` are, it stops tracking at its first collection)."""

    entities: list[E]
    positions: list[int]  # in the caller's order
    bodies: list[bytes]
    saved: list[bytes]
    uses: list[tuple[Md5, ...]]  # the content each entity's files use, in file order
    maybe_sent: list[bool]
    content: dict[Md5, tuple[str, bytes]]  # (file name, bytes) by md5, for the chunk's files


class BatchSaver(Generic[E]):
    """One ``save_all`` run (see module docstring)."""

    def __init__(
        self,
        requester: Requester,
        model: type[E],
        *,
        hasher: Hasher,
        uploader: Uploader,
        concurrency: int | None = None,
        limits: BatchLimits | None = None,
        on_progress: ProgressCallback | None = None,
        after_batch: Callable[[list[E]], Awaitable[Any]] | None = None,
        key: str | None = None,
        find_by_key: FindByKey[E] | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if key is not None and find_by_key is None:
            raise ValueError("key= needs the reserved tags (Session(idempotency_tags=True))")
        self._requester = requester
        self._hasher = hasher
        self._uploader = uploader
        self._model = model
        # Without find_by_key (idempotency_tags=False) entities carry no key: at least once.
        self._keys = KeyAssigner(key) if find_by_key is not None else None
        self._find_by_key = find_by_key
        self._params = params
        # Batches in flight: as given, or (None) from pyCOMPS's 4 up to MAX_SAVE_CONCURRENCY
        # while throughput grows, shrinking when it falls or the server says to slow down.
        self._in_flight = AdaptiveLimit(
            concurrency or DEFAULT_SAVE_CONCURRENCY,
            concurrency or MAX_SAVE_CONCURRENCY,
        )
        self._queued = concurrency or DEFAULT_SAVE_CONCURRENCY  # batches built ahead
        self._limits = limits or BatchLimits()
        self._on_progress = on_progress
        self._after_batch = after_batch
        self._uploaded: set[UUID] = set()
        # Sources of content uploaded on its own (big files), for re-sending content the server
        # lost; smaller content is in its batch's parts while the batch lives.
        self._large_sources: dict[UUID, ContentSource] = {}
        # Nothing per entity outlives its batch unless the caller holds it: saved entities are
        # counted, and listed (for BatchSaveError) only when the caller passed a collection.
        self._saved_count = 0
        self._saved: list[E] | None = None
        self._unsent_from: int | None = None  # an iterator's first position never pulled
        self._failed: list[E] = []
        self._unknown: list[E] = []
        self._errors: list[BaseException] = []
        self._total: int | None = None
        self._owner: str | None = None  # the logged-in user, sent as Owner on creates
        # Attach content shared by several entities once per batch, unless this host refused it.
        self._shared_parts = requester.capabilities.shared_parts != "no"
        self._shared_parts_refused = False

    async def run(self, entities: Iterable[E] | AsyncIterable[E]) -> int:
        """Save everything; returns how many were saved or raises BatchSaveError."""
        self._owner = await self._requester.tokens.user()
        if isinstance(entities, Sized) and isinstance(entities, Iterable):
            entities = list(entities)
            step = self._limits.max_entities  # (a batch's worth at a time: see _validate)
            for start in range(0, len(entities), step):  # bad input fails before any request
                self._validate(entities[start : start + step], start)
            self._total = len(entities)
            self._saved = []
        send, receive = anyio.create_memory_object_stream[_Batch[E]](self._queued)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self._in_flight.maximum):
                    tg.start_soon(self._consume, receive.clone())
                receive.close()
                await self._produce(entities, send)
        except BaseExceptionGroup as group:  # e.g. a caller's callback raised: theirs, as is
            raise first_error(group) from None
        if self._errors:
            missing = [e for e in self._errors if isinstance(e, MissingAssetsError)]
            if missing and not self._saved_count and len(self._errors) == len(missing):
                raise missing[0]
            raise BatchSaveError(
                self._saved or (),
                self._failed,
                self._errors,
                self._unknown,
                saved_count=self._saved_count,
                unsent_from=self._unsent_from,
            )
        return self._saved_count

    def _count_saved(self, entities: list[E]) -> None:
        self._saved_count += len(entities)
        if self._saved is not None:
            self._saved += entities

    # --- producing -----------------------------------------------------------------------------

    async def _produce(
        self, entities: Iterable[E] | AsyncIterable[E], send: MemoryObjectSendStream[_Batch[E]]
    ) -> None:
        async with send:
            batch: _Batch[E] = _Batch()
            position = 0  # in the caller's order, of the next chunk's first entity
            async for chunk in achunks(entities, self._limits.max_entities):
                start, position = position, position + len(chunk)
                if not self._errors:
                    batch = await self._add(batch, chunk, start, send)
                else:  # a batch failed for good: nothing more is sent
                    self._drop(chunk, list(range(start, position)))
                if self._errors and self._total is None:  # an iterator: left unread from here
                    self._unsent_from = position
                    break
            if batch.entities and not self._errors:
                await send.send(batch)
            elif batch.entities:
                self._not_sent(batch.entities)

    async def _add(
        self,
        batch: _Batch[E],
        chunk: list[E],
        start: int,
        send: MemoryObjectSendStream[_Batch[E]],
    ) -> _Batch[E]:
        """Add ``chunk`` (entities from position ``start`` on) to ``batch``, sending each batch
        that fills up; returns the batch being filled. On an error, the batch being filled and
        what is left of the chunk are not sent."""
        entities, positions = chunk, list(range(start, start + len(chunk)))
        try:
            if self._total is None:  # a list was checked whole before anything was sent
                self._validate(chunk, start)
            await self._hash_files(chunk)  # (first: a save JSON holds its files' md5s)
            entities, positions, known, updates = self._changed(chunk, positions)
            ready = await self._prepare(entities, positions, known, updates)
        except Exception as exc:
            self._errors.append(exc)
            ready = _Ready([], [], [], [], [], [], {})
        content, added = ready.content, 0
        if not content:  # nothing attached (updates, typically): runs at a time
            batch, added = await self._add_runs(batch, ready, send)
        max_bytes, max_entities = self._limits.max_bytes, self._limits.max_entities
        for entity, body, saved, uses, maybe_sent in zip(
            ready.entities[added:],
            ready.bodies[added:],
            ready.saved[added:],
            ready.uses[added:],
            ready.maybe_sent[added:],
            strict=True,
        ):
            if self._errors:  # a batch failed for good meanwhile: stop feeding new work
                break
            cost = len(body) + 2 + (self._parts_cost(batch, uses, content) if uses else 0)
            if _REQUEST_OVERHEAD + cost > max_bytes:
                self._errors.append(
                    ValueError(
                        f"{_name(entity)!r} alone is {cost} bytes, over the {max_bytes}-byte "
                        "request limit; give its big files by path so they are uploaded "
                        "separately"
                    )
                )
                break
            if len(batch.entities) >= max_entities or batch.size + cost > max_bytes:
                await send.send(batch)
                batch = _Batch()
                cost = len(body) + 2 + self._parts_cost(batch, uses, content)  # all its parts
            batch.add(entity, body, saved, uses, content, cost, maybe_sent)
            added += 1
        if self._errors:  # this chunk's, or a batch that failed for good meanwhile
            self._not_sent(batch.entities)
            self._drop(entities[added:], positions[added:])
            return _Batch()
        return batch

    async def _add_runs(
        self, batch: _Batch[E], ready: _Ready[E], send: MemoryObjectSendStream[_Batch[E]]
    ) -> tuple[_Batch[E], int]:
        """Add ``ready``'s entities, which attach no content, as many at once as fit (their
        bodies' sizes alone decide), sending each batch that fills up; returns the batch being
        filled and how many were added. Stops on an error, or before one that does not fit
        even alone (``_add`` reports it)."""
        max_bytes, max_entities = self._limits.max_bytes, self._limits.max_entities
        ends = list(accumulate((len(body) + 2 for body in ready.bodies), initial=0))
        count, start = len(ready.bodies), 0  # ends[i]: the bytes of the first i bodies
        while start < count and not self._errors:
            room = max_entities - len(batch.entities)
            limit = ends[start] + max_bytes - batch.size  # (bisect: the last end within it)
            stop = bisect_right(ends, limit, start, min(count, start + room) + 1) - 1
            if stop > start:
                batch.extend(ready, start, stop, ends[stop] - ends[start])
                start = stop
            elif not batch.entities:
                break  # too big even alone
            else:
                await send.send(batch)
                batch = _Batch()
        return batch, start

    def _changed(
        self, chunk: list[E], positions: list[int]
    ) -> tuple[list[E], list[int], list[bytes | None], list[_Update | None]]:
        """The entities of ``chunk`` (at ``positions``) to send and their positions, with the
        save JSON and the update of each saved one (None for new ones; ``_updates``). Those
        saved already as they are (a re-run after a cancellation, say) are counted as saved,
        not sent again."""
        known, updates = _updates(chunk)
        if None not in updates:  # every one an update to send (a list test in C)
            return chunk, positions, known, updates
        unchanged = [s is not None and u is None for s, u in zip(known, updates, strict=True)]
        if not any(unchanged):  # (typically: new ones)
            return chunk, positions, known, updates
        self._count_saved([e for e, same in zip(chunk, unchanged, strict=True) if same])
        kept = [i for i, same in enumerate(unchanged) if not same]
        return (
            [chunk[i] for i in kept],
            [positions[i] for i in kept],
            [known[i] for i in kept],
            [updates[i] for i in kept],
        )

    async def _prepare(
        self,
        entities: list[E],
        positions: list[int],
        known: list[bytes | None],
        updates: list[_Update | None],
    ) -> _Ready[E]:
        """``entities`` (at ``positions``; ``known`` and ``updates`` of the saved ones, from
        ``_changed``) ready to batch: keyed, encoded, their content gathered and large files
        uploaded. Each step runs over the whole chunk before the next: per entity, the steps
        run pydantic-core, the JSON splice and the interpreter in turn, and interleaved they
        evicted each other's code from the CPU's instruction cache (about a third more client
        CPU per entity)."""
        keys, owner = self._keys, self._owner
        maybe_sent = (
            [keys.assign(e, p) for e, p in zip(entities, positions, strict=True)]
            if keys is not None and None in known  # (updates are not created by this call)
            else [False] * len(entities)
        )
        # Encoded once, by pydantic-core: the save JSON is what the entity holds once saved
        # (mark_saved); the body's length is the batch size estimate, its bytes what is posted.
        # New ones as pyCOMPS creates them, with their reserved tags; updates as pyCOMPS sends
        # them, attaching only the files they add.
        saved = [e.save_json() if s is None else s for e, s in zip(entities, known, strict=True)]
        bodies = [
            create_json(e, owner, s) if u is None else u[0]
            for e, s, u in zip(entities, saved, updates, strict=True)
        ]
        sent_files = [_sent_files(e, u) for e, u in zip(entities, updates, strict=True)]
        content: dict[Md5, tuple[str, bytes]] = {}
        uses = await self._attachments(sent_files, content)
        return _Ready(entities, positions, bodies, saved, uses, maybe_sent, content)

    def _drop(self, entities: list[E], positions: list[int]) -> None:
        """Entities (at ``positions``) this call will not send, after an error ended it: keyed
        first, so that those an earlier call may have created are reported as unknown."""
        if self._keys is not None:
            for entity, position in zip(entities, positions, strict=True):
                self._keys.assign(entity, position)
        self._not_sent(entities)

    def _parts_cost(
        self, batch: _Batch[E], uses: tuple[Md5, ...], content: dict[Md5, tuple[str, bytes]]
    ) -> int:
        """Bytes that attaching an entity's content adds to ``batch``: shared content that the
        batch carries already costs nothing more (unless each file gets its own part)."""
        if not self._shared_parts:
            return sum(_part_size(*content[md5]) for md5 in uses)
        cost = 0
        for i, md5 in enumerate(uses):  # each content new to the batch, once
            if md5 not in batch.parts and md5 not in uses[:i]:
                cost += _part_size(*content[md5])
        return cost

    def _not_sent(self, entities: list[E]) -> None:
        """Entities this call did not send: failed, unless an earlier call may have created
        them (they carry a key already)."""
        for entity in entities:
            may_exist = self._keys is not None and self._keys.may_exist(entity)
            (self._unknown if may_exist else self._failed).append(entity)

    def _validate(self, entities: list[E], start: int) -> None:
        """Check ``entities`` (from position ``start`` on) before any is sent: a clear error for
        the first that cannot be saved. A file object shared by several entities (one config
        for all, typically) is checked once per call (a few at a time: a million files held
        for the whole list would be memory that grows with the call)."""
        model = self._model
        checked: dict[int, _AssetFile] = {}  # (holding the files: an id is not reused)
        for index, entity in enumerate(entities, start):
            if not isinstance(entity, model):
                raise TypeError(
                    f"item {index} is a {type(entity).__name__}, expected {model.__name__}"
                )
            if entity.id is None:
                if isinstance(entity, Simulation):
                    if not entity.name:
                        raise ValueError(f"Simulation #{index} has no name")
                    if entity.experiment_id is None:
                        raise ValueError(f"simulation {entity.name!r} has no experiment_id")
                elif isinstance(entity, WorkItem):
                    if not entity.name:
                        raise ValueError(f"WorkItem #{index} has no name")
                    if entity.worker is None or not entity.environment_name:
                        raise ValueError(
                            f"work item {entity.name!r} needs worker and environment_name"
                        )
            for file in _files_of(entity):
                if id(file) in checked:
                    continue
                checked[id(file)] = file
                source = file.source
                if source is not None and source.path is not None:
                    check_readable_file(source.path)

    async def _hash_files(self, entities: list[E]) -> None:
        """Hash the files of ``entities`` given by path or bytes without an md5 (one
        worker-thread call for all)."""
        unhashed = {
            id(f): f
            for entity in entities
            for f in _files_of(entity)
            if f.md5_checksum is None and f.source is not None
        }
        if unhashed:
            await ensure_md5s(list(unhashed.values()), self._hasher)

    async def _attachments(
        self, sent_files: list[Sequence[_AssetFile]], content: dict[Md5, tuple[str, bytes]]
    ) -> list[tuple[Md5, ...]]:
        """For each entity's ``sent_files``, which content they use, in file order, adding what
        is new to ``content``. Big files are uploaded on their own (and are not among the uses).
        A file object shared by several entities (one config for all, typically) is looked at
        once."""
        if not any(sent_files):  # (updates that add no files, typically)
            return [()] * len(sent_files)
        files = {id(f): f for entity_files in sent_files for f in entity_files}
        keys = {number: await self._attach(file, content) for number, file in files.items()}
        return [
            tuple(key for f in entity_files if (key := keys[id(f)]) is not None)
            for entity_files in sent_files
        ]

    async def _attach(self, file: _AssetFile, content: dict[Md5, tuple[str, bytes]]) -> Md5 | None:
        """The key of ``file``'s content in ``content`` (added if new); None for a file without
        content here (md5-only: the server holds it) or a big one, which is uploaded instead."""
        source = file.source
        if source is None:
            return None
        md5, data = file.md5_checksum, source.data
        assert md5 is not None
        size = file.length if file.length is not None else len(data or b"")
        if size > self._limits.large_file_bytes:
            self._large_sources[md5] = source
            if md5 not in self._uploaded:
                await self._uploader.upload(source, md5, size)
                self._uploaded.add(md5)
            return None
        key = md5.int
        if key not in content:
            content[key] = (file.file_name, data if data is not None else await read_source(source))
        return key

    # --- consuming -----------------------------------------------------------------------------

    async def _consume(self, receive: MemoryObjectReceiveStream[_Batch[E]]) -> None:
        async with receive:
            while True:
                async with self._in_flight.limiter:  # a batch is taken only with a slot
                    try:
                        batch = await receive.receive()
                    except anyio.EndOfStream:
                        return
                    landed = await self._save_or_record(batch)
                if landed:
                    self._in_flight.moved(len(batch.entities))
                    if self._on_progress is not None:
                        self._on_progress(self._saved_count, self._total)
                    if self._after_batch is not None:
                        await self._after_batch(batch.entities)

    async def _save_or_record(self, batch: _Batch[E]) -> bool:
        """Save ``batch``; True if it landed, else its entities and error are recorded."""
        try:
            await self._save_batch(batch)
        except CreateFailed as failure:
            exc = failure.error
            # Missing content is the expected first answer of a two-pass save.
            level = logging.INFO if isinstance(exc, MissingAssetsError) else logging.WARNING
            logger.log(level, "a batch of %d failed for good: %s", len(batch.entities), exc)
            self._count_saved([e for e in batch.entities if e.id is not None])
            lost = [e for e in batch.entities if e.id is None]
            (self._unknown if failure.unknown else self._failed).extend(lost)
            self._errors.append(exc)
            return False
        self._count_saved(batch.entities)
        return True

    async def _save_batch(self, batch: _Batch[E]) -> None:
        async def post(indexes: list[int]) -> list[UUID]:
            return await self._post(batch, indexes)

        async def lookup(indexes: list[int]) -> dict[int, UUID]:
            assert self._find_by_key is not None
            new = [i for i in indexes if batch.entities[i].id is None]
            found = await self._find_by_key([batch.entities[i] for i in new])
            return {new[i]: entity.id for i, entity in found.items() if entity.id is not None}

        async def recover(error: ApiError) -> bool:
            if error.status != 400:
                return False
            untracked = error.details.get("UntrackedIds")
            if untracked:
                await self._upload_missing(batch, [UUID(str(m)) for m in untracked])
                return True
            if batch.sent_shared and batch.shares_parts(list(range(len(batch.entities)))):
                # Refused as a whole (400: nothing created). Perhaps this server matches parts
                # to files by position (PROTOCOL.md, row 11): send pyCOMPS's layout instead.
                logger.warning(
                    "the server refused a batch that attaches shared content once (%s); "
                    "sending one part per file, as pyCOMPS does",
                    error,
                )
                self._shared_parts = False
                self._shared_parts_refused = True
                return True
            return False

        try:
            ids = await create_once(
                list(range(len(batch.entities))),
                post=post,
                lookup=lookup if self._find_by_key is not None else None,
                maybe_sent=batch.maybe_sent,
                retry=self._requester.retry,
                recover=recover,
            )
        except CreateFailed as failure:
            self._assign(batch, failure.ids)
            raise
        self._assign(batch, ids)

    async def _post(self, batch: _Batch[E], indexes: list[int]) -> list[UUID]:
        whole = len(indexes) == len(batch.bodies)  # (the first attempt, typically)
        bodies = batch.bodies if whole else [batch.bodies[i] for i in indexes]
        entities = b"[" + b", ".join(bodies) + b"]"
        files: list[tuple[str, tuple[str, bytes, str]]] = [
            ("not_a_file", (self._model.plural, entities, "application/json"))
        ]
        # Shared content once per batch, or (a server that refused that) one part per file.
        batch.sent_shared = self._shared_parts
        md5s = batch.parts if self._shared_parts else [m for i in indexes for m in batch.uses[i]]
        files += [
            (str(UUID(int=md5)), (name, data, media_type(name)))
            for md5 in md5s
            for name, data in [batch.parts[md5]]
        ]
        try:
            # One attempt: this loop retries (and looks up) itself, so retries never stack.
            response = await self._requester.request(
                "POST", self._model.plural, params=self._params, files=files, max_attempts=1
            )
            ids = parse_ids(response, len(indexes))
        except BaseException as exc:  # lost or cancelled: a look-up must let it settle
            mark_sent([batch.entities[i] for i in indexes], exc)
            if isinstance(exc, RateLimitedError) or (
                isinstance(exc, ApiError) and exc.status == 503
            ):
                self._in_flight.back_off()  # the server says: fewer at once
            raise
        if self._shared_parts_refused and self._requester.capabilities.shared_parts != "no":
            await self._requester.learn(shared_parts="no")  # this layout works; that did not
        return ids

    def _assign(self, batch: _Batch[E], ids: dict[int, UUID]) -> None:
        created: Any = None  # a new entity's first state, for the models that have one
        if issubclass(self._model, Simulation):
            created = SimulationState.Created
        elif issubclass(self._model, WorkItem):
            created = WorkItemState.Created
        entities, saved = batch.entities, batch.saved
        for index, entity_id in ids.items():
            entity = entities[index]
            if entity.id is None:
                entity._record_save(entity_id, saved[index], created)
            else:  # an update: the entity has its id already
                entity.mark_saved(saved[index])

    async def _upload_missing(self, batch: _Batch[E], md5s: list[UUID]) -> None:
        sources = {UUID(int=md5): ContentSource(data=part[1]) for md5, part in batch.parts.items()}
        sources.update(self._large_sources)
        unknown = [m for m in md5s if m not in sources]
        if unknown:
            references = {
                m: [
                    _label(e, f)
                    for e in batch.entities
                    for f in _files_of(e)
                    if f.md5_checksum == m
                ]
                for m in unknown
            }
            raise MissingAssetsError(unknown, references)
        for md5 in md5s:  # content we hold but the server lost or never got: send it
            source = sources[md5]
            size = source.size
            if size is None:
                assert source.path is not None
                size = (await anyio.Path(source.path).stat()).st_size
            await self._uploader.upload(source, md5, size)


# A saved entity's update: its JSON, and where the files it adds are among its files.
_Update = tuple[bytes, Sequence[int]]


def _updates(entities: list[E]) -> tuple[list[bytes | None], list[_Update | None]]:
    """For each saved entity of ``entities``, its save JSON and its update (None if the server
    holds that save JSON already: nothing to send); None and None for new ones."""
    known = [None if e.id is None else e.save_json() for e in entities]
    updates = [None if s is None else e._update_of(s) for e, s in zip(entities, known, strict=True)]
    return known, updates


def _sent_files(entity: E, update: _Update | None) -> Sequence[_AssetFile]:
    """The files whose content a save of ``entity`` sends: all of a new one's (``update`` is
    None), only those its update adds."""
    if update is None:
        return _files_of(entity)
    added = update[1]
    if not added:  # (most updates: nothing to look up)
        return ()
    files = _files_of(entity)
    return [files[i] for i in added]


def _part_size(file_name: str, data: bytes) -> int:
    return _PART_OVERHEAD + len(media_type(file_name)) + len(data)


def _name(entity: Entity) -> str:
    """An entity's name for messages (collections have none)."""
    return str(getattr(entity, "name", None) or type(entity).__name__)


def _label(entity: Entity, file: _AssetFile) -> str:
    """``<entity name>/<file path>`` for messages."""
    return f"{_name(entity)}/{getattr(file, 'path_in_collection', file.file_name)}"


def _files_of(entity: Entity) -> Sequence[_AssetFile]:
    values = entity.__dict__  # (read where pydantic keeps them: an attribute read costs more)
    files: Sequence[_AssetFile] = values.get("files") or values.get("assets") or ()
    return files
