"""Operations every entity type shares: get, list, iterate (auto-paging), count, refresh, tags,
and for stateful entities commission / cancel / delete over one id or many."""

from __future__ import annotations

import builtins
import logging
import re
from collections import deque
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar
from uuid import UUID

import httpx

from .._concurrency import for_each_bounded, gather_bounded
from .._constants import DEFAULT_OPERATION_CONCURRENCY, IDS_PER_REQUEST
from .._query import Query
from .._responses import json_body, json_list, read_model, response_uuid
from .._transfer.batching import ProgressCallback
from .._transfer.exactly_once import (
    CreateFailed,
    KeyAssigner,
    create_once,
    group_query_tag,
    groups_of,
    mark_sent,
    match_keys,
    settle,
)
from ..errors import ApiError, MalformedResponseError, NotFoundError, OutcomeUnknownError
from ..models import Entity, RelationType, TagOperationMode, WorkItem

if TYPE_CHECKING:
    from .._requester import Requester
    from .peers import Peers

__all__ = ["EntityResource", "StatefulResource", "as_id", "parse_content_range"]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Entity)
IdLike = Entity | UUID | str

UNREADABLE_ROWS_KEPT = 100  # raw rows kept for a look after a warning; bounded
_MISSING = object()
# Inferred (§14.18): fetch many entities by id in one list call. COMPS is a ServiceStack service
# and AutoQuery's convention is ``Ids=a,b,c``; if a server ignores the parameter (it then returns
# ids we did not ask for) or refuses it (400), we fall back to one GET per id. Chunked so URLs
# stay short.
IDS_PARAM = "Ids"

_CONTENT_RANGE = re.compile(r"(?:\w+\s+)?(?:\d+-\d+|\*)/(\d+)")


def parse_content_range(value: str | None) -> int | None:
    """The total of ``items 0-99/500`` or ``0-99/500`` (§5.1), or ``None``."""
    if not value:
        return None
    match = _CONTENT_RANGE.search(value)
    return int(match.group(1)) if match else None


def as_id(value: IdLike) -> UUID:
    """The UUID of an entity, a UUID or a UUID string; ``ValueError`` before any request."""
    if isinstance(value, Entity):
        if value.id is None:
            raise ValueError(f"this {type(value).__name__} has no id yet: save it first")
        return value.id
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a valid id (expected a UUID)") from None


def _tags_payload(tags: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(tags, Mapping):
        raise TypeError("tags must be a mapping of names to values")
    for key, value in tags.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"tag names must be non-empty strings, got {key!r}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(
                f"tag {key!r}: values must be str, int, float, bool or None (§4.6), "
                f"got {type(value).__name__}"
            )
    return dict(tags)


class EntityResource(Generic[E]):
    """Read and tag operations of one entity type, e.g. ``session.simulations``."""

    model: ClassVar[type[Entity]]
    default_page_size: ClassVar[int] = 5000

    def __init__(self, requester: Requester, peers: Peers) -> None:
        self._requester = requester
        self._peers = peers
        self.unreadable_rows: deque[Any] = deque(maxlen=UNREADABLE_ROWS_KEPT)
        """The last rows of list answers that could not be read (each was logged)."""

    @property
    def _plural(self) -> str:
        return self.model.plural

    def _parse(self, data: Any) -> E:
        return read_model(self.model, data)  # type: ignore[return-value]

    def _items(self, response: httpx.Response) -> list[Any]:
        """The rows of a list answer, unparsed (a row is read, or reported, one by one)."""
        rows = json_body(response).get(self._plural, _MISSING)
        if not isinstance(rows, list):
            raise MalformedResponseError(
                f"expected {{{self._plural!r}: [...]}}", url=str(response.request.url)
            )
        return rows

    def _readable(self, rows: list[Any]) -> Iterator[E]:
        """The rows that parse; one that cannot be read is reported and kept in
        ``unreadable_rows``, never fatal to its page (pyCOMPS passes rows through)."""
        for row in rows:
            try:
                yield self._parse(row)
            except MalformedResponseError as exc:
                logger.warning("skipped a %s row: %s; raw: %.300r", self.model.__name__, exc, row)
                self.unreadable_rows.append(row)

    async def get(
        self,
        entity_id: IdLike,
        *,
        children: Sequence[str] | None = None,
        query: Query | None = None,
    ) -> E:
        """One entity by id, with the requested children (``["tags", "files"]``)."""
        q = query or Query()
        if children:
            q = q.select_children(children)
        params = q.to_params(self.model)
        response = await self._requester.request(
            "GET", f"{self._plural}/{as_id(entity_id)}", params=params
        )
        items = self._items(response)
        if len(items) != 1:
            raise MalformedResponseError(f"expected one {self.model.__name__}, got {len(items)}")
        return self._parse(items[0])

    async def get_many(
        self,
        ids: Iterable[IdLike],
        *,
        children: Sequence[str] | None = None,
        query: Query | None = None,
    ) -> list[E]:
        """Many entities by id in a few list calls (order of ``ids`` kept, unknown ids left
        out)."""
        wanted = list(dict.fromkeys(as_id(i) for i in ids))
        q = query or Query()
        base = (q.select_children(children) if children else q).to_params(self.model)
        found: dict[UUID, E] = {}
        for start in range(0, len(wanted), IDS_PER_REQUEST):
            chunk = wanted[start : start + IDS_PER_REQUEST]
            items = await self._by_ids(chunk, base)
            if items is None:  # this host ignores or refuses Ids=: one GET per id
                items = await self._gather(chunk, lambda i: self.get(i, children=children))
            found.update({item.id: item for item in items if item.id is not None})
        return [found[i] for i in wanted if i in found]

    async def _by_ids(
        self, chunk: builtins.list[UUID], base: dict[str, str]
    ) -> builtins.list[E] | None:
        """One ``Ids=`` list call (PROTOCOL.md row 5), or None where the host is known, or now
        found, to ignore or refuse the parameter (learned for the session and later ones)."""
        if not self._requester.capabilities.ids_param_works():
            return None
        try:
            response = await self._requester.request(
                "GET",
                self._plural,
                params={**base, IDS_PARAM: ",".join(map(str, chunk)), "count": str(len(chunk))},
            )
        except ApiError as exc:
            if exc.status != 400:
                raise
            await self._requester.learn(ids_param="reject")
            return None
        items = list(self._readable(self._items(response)))
        if any(item.id not in chunk for item in items):  # ids we did not ask for
            await self._requester.learn(ids_param="ignore")
            return None
        return items

    async def list(
        self, query: Query | None = None, *, page_size: int | None = None
    ) -> builtins.list[E]:
        """Every entity matching ``query`` (paged as needed; ``query.count`` caps the total)."""
        return [entity async for entity in self.iterate(query, page_size=page_size)]

    async def iterate(
        self, query: Query | None = None, *, page_size: int | None = None
    ) -> AsyncGenerator[E, None]:
        """Entities matching ``query``, fetched page by page with offset/count until the
        server's Content-Range says the set is complete: no silent truncation (§14.15)."""
        q = query or Query()
        base = q.to_params(self.model)  # validated before the first request
        page = page_size or self.default_page_size
        if page <= 0:
            raise ValueError("page_size must be positive")
        limit = q.count_value or None
        offset, fetched = q.offset_value, 0
        previous: list[Any] = []
        promised: int | None = None  # the first total the server gave
        while True:
            want = page if limit is None else min(page, limit - fetched)
            if want <= 0:
                return
            params = {**base, "count": str(want)}
            if offset:  # pyCOMPS leaves offset=0 out (QueryCriteria.to_param_dict)
                params["offset"] = str(offset)
            response = await self._requester.request("GET", self._plural, params=params)
            items = self._items(response)
            if items and items == previous:  # offset ignored: the same page for ever
                raise MalformedResponseError(
                    f"the server answered offset {offset} with the page it gave for the "
                    f"previous offset: it does not page {self._plural}",
                    url=str(response.request.url),
                )
            previous = items
            for entity in self._readable(items):
                yield entity
            fetched += len(items)
            offset += len(items)
            total = parse_content_range(response.headers.get("content-range"))
            promised = total if promised is None else promised
            if promised is not None and fetched > 2 * promised + page:
                raise MalformedResponseError(  # a total that runs away as we page
                    f"{fetched} {self._plural} fetched, the server first said {promised}",
                    url=str(response.request.url),
                )
            # Inferred (§5.1): without Content-Range a short page is the last one; a full page
            # may have more behind it (a server that never sends the header), so ask again.
            if not items or (total is None and len(items) < want):
                return
            if total is not None and offset >= total:
                return

    async def count(self, query: Query | None = None) -> int:
        """How many entities match ``query`` (one small request)."""
        q = (query or Query()).select(["id"])
        params = {**q.to_params(self.model), "count": "1", "offset": "0"}
        response = await self._requester.request("GET", self._plural, params=params)
        total = parse_content_range(response.headers.get("content-range"))
        return total if total is not None else len(self._items(response))

    async def refresh(self, entity: E) -> E:
        """Re-read ``entity`` from the server in place (children it already has included)."""
        children = [
            name
            for name in sorted(self.model.children_names)
            if getattr(entity, name, None) is not None
        ]
        fresh = await self.get(as_id(entity), children=children)
        for name in type(entity).model_fields:
            value = getattr(fresh, name)
            if value is not None or name in fresh.model_fields_set:
                setattr(entity, name, value)
        return entity

    async def find_by_keys(self, entities: Sequence[E]) -> dict[int, E]:
        """The server's entities created with the idempotency keys of ``entities`` (new ones
        whose save has started): {index in ``entities``: entity on the server}. One exact-match
        tag query per key group (see ``_transfer/exactly_once.py``), asked only once a create of
        them that got no answer has had time to settle."""
        await settle(entities, self._requester.retry.sleep)
        fields = ["id", "name"] if "name" in self.model.model_fields else ["id"]
        candidates: list[E] = []
        for group in groups_of(entities):
            query = Query().select(fields).select_children(["tags"])
            async for entity in self.iterate(query.where_tag([group_query_tag(group)])):
                candidates.append(entity)
        return match_keys(candidates, entities)  # type: ignore[return-value]

    async def _create_one(
        self, entity: E, key: str | None, post: Callable[[], Awaitable[UUID]]
    ) -> E:
        """Create ``entity`` exactly once through ``post`` (which returns the new id): it gets
        its key first, and is looked up instead of re-sent whenever it may exist already."""
        if not self._requester.idempotency_tags:
            if key is not None:
                raise ValueError("key= needs the reserved tags (Session(idempotency_tags=True))")
            keys = None
        else:
            keys = KeyAssigner(key)

        async def send(_: list[int]) -> list[UUID]:
            try:
                return [await post()]
            except BaseException as exc:  # lost or cancelled: a look-up must let it settle
                mark_sent([entity], exc)
                raise

        async def lookup(_: list[int]) -> dict[int, UUID]:
            found = await self.find_by_keys([entity])
            return {i: e.id for i, e in found.items() if e.id is not None}

        try:
            ids = await create_once(
                [0],
                post=send,
                lookup=lookup if keys is not None else None,
                maybe_sent=keys is not None and keys.assign(entity, 0),
                retry=self._requester.retry,
            )
        except CreateFailed as failure:
            if failure.unknown:
                what = f"{self.model.__name__} {getattr(entity, 'name', None) or ''}".strip()
                raise OutcomeUnknownError(
                    what, key=entity.idempotency_key, cause=failure.error
                ) from failure.error
            raise failure.error from None
        entity.id = ids[0]
        return entity

    async def parents(
        self, entity: IdLike, relation: RelationType | None = None
    ) -> builtins.list[WorkItem]:
        """Work items related to ``entity`` (one relation call, one batched list call)."""
        path = f"WorkItems/RelatedEntityId/{as_id(entity)}/Type/{self.model.__name__}"
        if relation is not None:
            path += f"/Relation/{relation.value}"
        response = await self._requester.request("GET", path)
        ids = [response_uuid(p.get("Id"), response) for p in json_list(response, "Parents")]
        return await self._peers.work_items.get_many(ids)

    # --- tags (§9) -----------------------------------------------------------------------------

    async def set_tags(self, entity: IdLike, tags: Mapping[str, Any]) -> None:
        """Replace all tags."""
        await self._tags(entity, tags, TagOperationMode.Replace)

    async def merge_tags(self, entity: IdLike, tags: Mapping[str, Any]) -> None:
        """Add or overwrite these tags, keep the others."""
        await self._tags(entity, tags, TagOperationMode.Merge)

    async def delete_tags(self, entity: IdLike, keys: Iterable[str]) -> None:
        """Remove these tag names."""
        await self._tags(entity, dict.fromkeys(keys), TagOperationMode.Delete)

    async def _tags(self, entity: IdLike, tags: Mapping[str, Any], mode: TagOperationMode) -> None:
        payload = {"Tags": _tags_payload(tags), "OperationMode": mode.value}
        entity_id = as_id(entity)
        # Merge/Replace/Delete converge to the same tags when repeated: safe to retry.
        await self._requester.request(
            "POST", f"{self._plural}/{entity_id}/tags", json=payload, idempotent=True
        )
        if isinstance(entity, Entity):
            current = dict(entity.tags or {}) if mode != TagOperationMode.Replace else {}
            if mode == TagOperationMode.Delete:
                for key in tags:
                    current.pop(key, None)
            else:
                current.update(tags)
            entity.tags = current

    async def _gather(
        self,
        items: Iterable[Any],
        fn: Callable[[Any], Awaitable[Any]],
        concurrency: int = DEFAULT_OPERATION_CONCURRENCY,
    ) -> builtins.list[Any]:
        return await gather_bounded(items, fn, concurrency)


class StatefulResource(EntityResource[E]):
    """Commission, cancel and delete (Suites, Experiments, Simulations, WorkItems).

    Many entities at once are a bounded fan-out (``concurrency`` requests in flight, nothing
    kept per entity) with ``on_progress(done, total)``; each change is idempotent, so after a
    crash or a failure the same call finishes the job."""

    async def commission(
        self,
        entities: IdLike | Iterable[IdLike],
        *,
        concurrency: int = DEFAULT_OPERATION_CONCURRENCY,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Request commissioning (an Experiment/Suite commissions its Created simulations)."""
        await self._state(entities, "CommissionRequested", concurrency, on_progress)

    async def cancel(
        self,
        entities: IdLike | Iterable[IdLike],
        *,
        concurrency: int = DEFAULT_OPERATION_CONCURRENCY,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Request cancellation of running work."""
        await self._state(entities, "CancelRequested", concurrency, on_progress)

    async def delete(
        self,
        entities: IdLike | Iterable[IdLike],
        *,
        expire_now: bool = False,
        concurrency: int = DEFAULT_OPERATION_CONCURRENCY,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """Soft-delete (cascading to children); ``expire_now`` makes it permanent sooner. An
        entity that is gone already counts as deleted, so a re-run after a crash finishes."""
        params = {"expirenow": "True"} if expire_now else None

        async def delete_one(entity_id: UUID) -> None:
            try:
                await self._requester.request(
                    "DELETE", f"{self._plural}/{entity_id}", params=params
                )
            except NotFoundError:
                logger.debug("%s %s is gone already", self.model.__name__, entity_id)

        await self._fan_out(entities, delete_one, concurrency, on_progress)

    async def _state(
        self,
        entities: IdLike | Iterable[IdLike],
        state: str,
        concurrency: int,
        on_progress: ProgressCallback | None,
    ) -> None:
        async def change(entity_id: UUID) -> None:
            await self._requester.request("PUT", f"{self._plural}/{entity_id}/State/{state}")

        await self._fan_out(entities, change, concurrency, on_progress)

    async def _fan_out(
        self,
        entities: IdLike | Iterable[IdLike],
        fn: Callable[[UUID], Awaitable[None]],
        concurrency: int,
        on_progress: ProgressCallback | None,
    ) -> None:
        ids = _id_list(entities)  # every id checked before anything is sent
        done = 0

        def landed(_: int, __: None) -> None:
            nonlocal done
            done += 1
            if on_progress is not None:
                on_progress(done, len(ids))

        await for_each_bounded(ids, fn, concurrency, landed)


def _id_list(entities: IdLike | Iterable[IdLike]) -> list[UUID]:
    if isinstance(entities, Entity | UUID | str):
        return [as_id(entities)]
    return [as_id(e) for e in entities]
