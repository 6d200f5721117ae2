"""Reading answers: every 2xx body the SDK parses goes through here, so a body that is not what
the protocol says (empty, HTML, not JSON, an array for an object, a null item) is one typed
``MalformedResponseError``, never a raw ``ValueError``, ``KeyError`` or ``TypeError``."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import MalformedResponseError
from .models import WireModel

__all__ = ["json_body", "json_list", "parse_ids", "read_model", "response_uuid"]


def _where(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.copy_with(query=None)}"


def json_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of ``response``; ``MalformedResponseError`` for anything else."""
    try:
        body = response.json()
    except ValueError:
        kind = response.headers.get("content-type") or "no content type"
        raise MalformedResponseError(
            f"{response.status_code} with a body that is not JSON ({kind}, "
            f"{len(response.content)} bytes)",
            url=_where(response),
        ) from None
    if not isinstance(body, dict):
        raise MalformedResponseError(
            f"expected a JSON object, got {type(body).__name__}", url=_where(response)
        )
    return body


def json_list(
    response: httpx.Response, key: str, *, required: bool = False
) -> list[dict[str, Any]]:
    """``body[key]`` as a list of objects (missing or null: empty, unless ``required``);
    anything else is a ``MalformedResponseError``."""
    body = json_body(response)
    if required and key not in body:
        raise MalformedResponseError(f"an answer without {key!r}", url=_where(response))
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MalformedResponseError(
            f"expected {{{key!r}: [objects]}}, got {str(value)[:200]}", url=_where(response)
        )
    return value


class _SaveAnswer(BaseModel):  # (other keys ignored)
    Ids: list[UUID]


# The answer of a save read in one pass by pydantic-core, from its bytes: ~0.15 us an id, against
# ~1.4 for ``uuid.UUID(text)`` after the json module (a bulk save reads one per entity). UUIDs
# are read in the forms ``UUID(text)`` reads: hyphens or not, braces, ``urn:uuid:``, any case.
_IDS = TypeAdapter(list[UUID])


def parse_ids(response: httpx.Response, count: int) -> list[UUID]:
    """The ``{"Ids": [...]}`` answer of a save of ``count`` entities (§8.1), parsed once. Anything
    else is a ``MalformedResponseError``: the save may have happened, so callers look before
    re-sending."""
    try:
        ids = _SaveAnswer.model_validate_json(response.content).Ids
    except ValueError:  # not that answer, or not UTF-8 JSON as such (a BOM): read it plainly
        body = json_body(response)
        try:
            ids = _IDS.validate_python(body.get("Ids"))
        except ValueError:  # (a ValidationError is a ValueError)
            ids = None
    if ids is None or len(ids) != count:
        raise MalformedResponseError(
            f"expected {count} ids, got {response.text[:200]!r}", url=_where(response)
        )
    return ids


def response_uuid(value: Any, response: httpx.Response) -> UUID:
    """An id read from ``response``; ``MalformedResponseError`` if it is not one."""
    try:
        return UUID(str(value))
    except ValueError:
        raise MalformedResponseError(f"{value!r} is not an id", url=_where(response)) from None


M = TypeVar("M", bound=WireModel)


def read_model(model: type[M], row: Any, *, url: str | None = None) -> M:
    """``row`` of a server answer as ``model`` (``from_wire``); ``MalformedResponseError`` when
    it cannot be read even leniently."""
    try:
        return model.from_wire(row)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MalformedResponseError(
            f"a {model.__name__} the SDK cannot read: {exc.error_count()} problem(s), first: "
            f"{first['msg']} at {first['loc']}; {str(row)[:200]}",
            url=url,
        ) from exc
