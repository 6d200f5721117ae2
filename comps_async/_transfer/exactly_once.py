"""Exactly-once creates over a protocol that has no idempotency keys.

A create whose answer is lost (reset after commit, timeout, 5xx, a 2xx whose body cannot be
read) may or may not have happened. COMPS offers no idempotency key, so the key travels as two
reserved tags that every new entity carries from its first attempt on:

- ``comps_async.key = <call key>/<position>`` -- the entity's own key;
- ``comps_async.batch = <call key>/<position // 100>`` -- its lookup group.

A lookup lists one group with an exact-match tag filter (``tagfilters=comps_async.batch=<group>``)
and matches ``comps_async.key`` client-side. Exact match only: COMPS documents no meaning for
``~`` on tags and no OR between filters, so one equality per request is the query certain to
work on a real server (protocol §5; inferred: tag values compare case-insensitively there, as
SQL Server's default collation does, so keys are matched case-insensitively here too).

A look-up can only see what the server has committed. A request that left just before its
answer was lost (a reset, a cancelled call) may still be in the server's hands, so entities are
looked up no sooner than ``SETTLE_S`` after they were last sent; a server that takes longer than
that to commit a request it has fully received can still be raced by a re-send (COMPS gives no
way to rule it out).

The key is kept on the entity object (a private attribute, never in ``tags``, so copying tags to
a new entity never copies its identity). An entity that already has a key, or whose key was
derived from a caller's ``key=``, may exist on the server: it is looked up before it is sent. So
re-running the same call (same objects, or a re-started script that rebuilds the same list with
the same ``key=``) returns the entities that landed and creates only the rest.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID

import anyio
import pydantic_core

from .._failures import Attempts, Failure, classify
from ..errors import (
    ApiError,
    KeyConflictError,
    MalformedResponseError,
)
from ..models import Entity
from ..policies.retry import RetryPolicy

__all__ = [
    "BATCH_TAG",
    "KEY_BLOCK",
    "KEY_TAG",
    "SETTLE_S",
    "CreateFailed",
    "KeyAssigner",
    "check_caller_key",
    "create_json",
    "create_once",
    "group_of",
    "group_query_tag",
    "groups_of",
    "mark_sent",
    "match_keys",
    "settle",
]

KEY_TAG = "comps_async.key"
"""Reserved tag: the idempotency key of an entity created by the SDK (``<call key>/<n>``)."""
BATCH_TAG = "comps_async.batch"
"""Reserved tag: the lookup group of that key (``<call key>/<n // 100>``)."""
# A lookup lists one group: at most this many entities, one page (pyCOMPS's batch size, §8.2).
KEY_BLOCK = 100
# How long after a create left its entities are looked up at the earliest: time for a server to
# commit a request it had fully received when its answer was lost (a batch commits in
# milliseconds on the local server; seconds leave room for a busy real one).
SETTLE_S = 2.0
# Caller keys end up inside a tag filter, which COMPS splits on commas and operators with no
# escaping (§5): only characters that cannot be read as syntax are allowed.
_CALLER_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def check_caller_key(key: str) -> str:
    """``key`` if it can travel inside a tag filter, else ``ValueError`` (before any request)."""
    if not isinstance(key, str) or not _CALLER_KEY.match(key):
        raise ValueError(
            f"key {key!r} must be 1-100 characters of letters, digits and . _ - : "
            "(it travels in a COMPS tag filter, which has no escaping)"
        )
    return key


class KeyAssigner:
    """Gives the entities of one call their keys. An entity that already has one keeps it."""

    def __init__(self, caller_key: str | None) -> None:
        self._explicit = caller_key is not None
        self._call = check_caller_key(caller_key) if caller_key is not None else uuid.uuid4().hex
        # A random key under this prefix was made by this call (nothing is kept per entity:
        # a million-entity call remembers no more than a one-entity call).
        self._fresh_prefix = f"{self._call}/"

    def assign(self, entity: Entity, position: int) -> bool:
        """Key ``entity`` (new entities only); True when it may already exist on the server."""
        if entity.id is not None:  # an update: not created by this call
            return False
        if entity.idempotency_key is None:
            entity._give_key(f"{self._call}/{position}")
            return self._explicit  # a new random key exists nowhere yet; a caller's key may
        return self.may_exist(entity)

    def may_exist(self, entity: Entity) -> bool:
        """Whether ``entity`` (not sent by this call) may have been created by an earlier call:
        it came with a key, or its key derives from the caller's ``key=``."""
        if entity.id is not None:
            return False
        key = entity.idempotency_key
        if key is None or self._explicit:
            return self._explicit
        return not key.startswith(self._fresh_prefix)


def create_json(entity: Entity, owner: str | None, saved: bytes | None = None) -> bytes:
    """The JSON object that creates ``entity``, encoded: its ``save_json`` (``saved`` if the
    caller has it) with pyCOMPS's create defaults (``Entity.create_defaults_json``) and, when it
    has a key, the reserved tags (copies of them in ``tags`` overwritten).

    Spliced into the encoded bytes rather than decoded, merged and encoded again: a bulk save
    does this for every entity. ``save_json`` is pydantic's compact JSON of the fields in
    declaration order, so a new entity's JSON starts with its ``Tags`` whenever it has tags
    (``Id``, the one field before them, is unset); anything else takes the merging path."""
    if saved is None:
        saved = entity.save_json()
    added = entity.create_defaults_json(owner)  # members ``saved`` does not have
    key = entity.idempotency_key
    if key is not None and entity.id is None:
        # Keys are letters, digits and ``. _ - : /`` (check_caller_key, KeyAssigner): nothing
        # in them needs escaping.
        reserved = b'"%s":"%s","%s":"%s"' % (_BATCH, group_of(key).encode(), _KEY, key.encode())
        tags = entity.tags
        if tags is None:
            added = b'"Tags":{' + reserved + (b"}," + added if added else b"}")
        elif BATCH_TAG in tags or KEY_TAG in tags or not saved.startswith(_TAGS_FIRST):
            wire = pydantic_core.from_json(saved)
            tagged = pydantic_core.from_json(b"{" + reserved + b"}")
            wire.update(pydantic_core.from_json(b"{" + added + b"}"))
            wire["Tags"] = {**wire.get("Tags", {}), **tagged}
            return pydantic_core.to_json(wire)
        else:
            inner = saved[len(_TAGS_FIRST) :]  # the caller's tags, then the rest
            comma = b"" if inner.startswith(b"}") else b","  # (no tags: nothing to separate)
            saved = _TAGS_FIRST + reserved + comma + inner
    if not added:
        return saved
    return b"{" + added + b"}" if saved == b"{}" else saved[:-1] + b"," + added + b"}"


_TAGS_FIRST = b'{"Tags":{'
_BATCH, _KEY = BATCH_TAG.encode(), KEY_TAG.encode()


def groups_of(entities: Sequence[Entity]) -> list[str]:
    """The lookup groups of the keyed new entities among ``entities``."""
    return sorted({group_of(key) for e in entities if e.id is None and (key := e.idempotency_key)})


def group_of(key: str) -> str:
    """The lookup group of ``key``: ``<call key>/<n>`` is in ``<call key>/<n // 100>``."""
    call, _, position = key.rpartition("/")
    return f"{call}/{int(position) // KEY_BLOCK}"


def mark_sent(entities: Sequence[Entity], error: BaseException) -> None:
    """Record that a create of ``entities`` left and ended in ``error``, if the server may still
    be working on it: no answer (lost, timed out, cancelled) or a gateway's 408/502/504. A
    server that answered itself (500, 503, 429, any 2xx) is done with the request."""
    if isinstance(error, ApiError | MalformedResponseError) and not (
        isinstance(error, ApiError) and error.status in (408, 502, 504)
    ):
        return
    now = time.monotonic()
    for entity in entities:
        if entity.id is None:
            entity._sent_at = now


async def settle(
    entities: Sequence[Entity], sleep: Callable[[float], Awaitable[None]] = anyio.sleep
) -> None:
    """Wait until ``SETTLE_S`` has passed since any of ``entities`` was last sent."""
    last = max((e._sent_at for e in entities if e._sent_at is not None), default=None)
    if last is not None and (wait := last + SETTLE_S - time.monotonic()) > 0:
        await sleep(wait)


def group_query_tag(group: str) -> str:
    """The exact-match tag filter that lists one lookup group."""
    return f"{BATCH_TAG}={group}"


def match_keys(candidates: Sequence[Entity], wanted: Sequence[Entity]) -> dict[int, Entity]:
    """{index in ``wanted``: the server entity carrying its key}. The oldest wins if a key was
    created twice (by a version without keys, or two processes at once); a different name under
    the same key means the key was reused for other work: ``KeyConflictError``."""
    by_key: dict[str, Entity] = {}
    for candidate in candidates:
        tag = str((candidate.tags or {}).get(KEY_TAG) or "").casefold()
        if tag and candidate.id is not None:
            by_key.setdefault(tag, candidate)
    found: dict[int, Entity] = {}
    for index, entity in enumerate(wanted):
        key = entity.idempotency_key
        hit = by_key.get(key.casefold()) if key else None
        if key is None or hit is None:
            continue
        ours, theirs = getattr(entity, "name", None), getattr(hit, "name", None)
        if ours is not None and theirs is not None and ours != theirs:
            raise KeyConflictError(key, existing_id=str(hit.id), existing=theirs, ours=ours)
        found[index] = hit
    return found


class CreateFailed(Exception):
    """Internal: a create ended without success. ``unknown`` tells whether the pending entities
    may exist on the server; ``ids`` holds those known to exist (found or created)."""

    def __init__(self, error: BaseException, *, unknown: bool, ids: dict[int, UUID]) -> None:
        super().__init__(str(error))
        self.error = error
        self.unknown = unknown
        self.ids = ids


Post = Callable[[list[int]], Awaitable[list[UUID]]]
Lookup = Callable[[list[int]], Awaitable[dict[int, UUID]]]
Recover = Callable[[ApiError], Awaitable[bool]]


async def create_once(
    pending: list[int],
    *,
    post: Post,
    lookup: Lookup | None,
    maybe_sent: bool,
    retry: RetryPolicy,
    recover: Recover | None = None,
) -> dict[int, UUID]:
    """Create the entities at ``pending`` (indexes into the caller's list); returns {index: id}.

    ``post(indexes)`` sends them and returns their ids; ``lookup(indexes)`` returns those that
    exist. Before every send of entities that may already exist, they are looked up, so a lost
    answer is never followed by a second create. Without ``lookup`` (no reserved tags) an
    ambiguous failure is re-sent blindly: at least once, not exactly once. ``recover(error)``
    may fix a definite 4xx (e.g. upload missing content) and ask for another attempt. At most
    ``retry.create_attempts`` attempts, waiting ``retry.delay_s`` through ``retry.sleep``
    between them (the session's RetryPolicy: every loop shares one backoff and tests never
    really wait).
    Raises ``CreateFailed`` when attempts run out or the failure is definite.
    """
    ids: dict[int, UUID] = {}
    attempts = Attempts(retry, retry.create_attempts)
    async for _ in attempts:
        if maybe_sent and lookup is not None:
            try:
                found = await lookup(pending)
            except Exception as exc:
                if isinstance(exc, KeyConflictError):
                    raise CreateFailed(exc, unknown=False, ids=ids) from exc
                if classify(exc) is not Failure.MAYBE:
                    raise CreateFailed(exc, unknown=True, ids=ids) from exc
                attempts.failed(exc)
                continue
            ids.update(found)
            pending = [i for i in pending if i not in found]
            maybe_sent = False  # what is still pending is known not to exist
            if not pending:
                return ids
        try:
            created = await post(pending)
        except Exception as exc:
            kind = classify(exc)
            if kind is not Failure.DEFINITE:
                attempts.failed(exc)
                maybe_sent = maybe_sent or kind is Failure.MAYBE
                continue
            if recover is not None and isinstance(exc, ApiError):
                try:
                    again = await recover(exc)
                except Exception as failure:
                    raise CreateFailed(failure, unknown=maybe_sent, ids=ids) from failure
                if again:
                    attempts.failed(exc)
                    attempts.again_now()
                    continue
            raise CreateFailed(exc, unknown=maybe_sent, ids=ids) from exc
        ids.update(zip(pending, created, strict=True))
        return ids
    assert isinstance(attempts.last, BaseException)  # (every failure here is an error)
    raise CreateFailed(attempts.last, unknown=maybe_sent, ids=ids) from attempts.last
