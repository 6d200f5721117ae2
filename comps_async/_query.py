"""``Query``: pyCOMPS's QueryCriteria as an immutable value that renders wire params (§5).

Every builder method returns a new Query, so a Query passed to the SDK is never mutated
(pyCOMPS's ``get_simulations(qc)`` mutates the caller's filters, §14.16). Names are checked
against the entity model when rendered, before any request is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .models import Entity, entity_type

__all__ = ["Query", "wire_field_name"]

# The value may not start with an operator character: "state==Failed" would otherwise be read
# as state = "=Failed" and match nothing, silently.
_FILTER = re.compile(r"^(\w+)\s*(!=|<=|>=|=|~|<|>)(?![=!~<>])(.*)$", re.DOTALL)
_TAG_FILTER = re.compile(r"^([^=!~<>]+?)\s*(?:(!=|<=|>=|=|~|<|>)(?![=!~<>])(.*))?$", re.DOTALL)


def wire_field_name(cls: type[Entity], name: str) -> str:
    """The JSON name of a field of ``cls``, given its Python name or its JSON name."""
    info = cls.model_fields.get(name)
    if info is not None and info.alias:
        return info.alias
    for info in cls.model_fields.values():
        if info.alias == name:
            return name
    known = ", ".join(sorted(cls.model_fields))
    raise ValueError(f"{cls.__name__} has no field {name!r}; known fields: {known}")


def _no_comma(kind: str, text: str) -> str:
    # COMPS splits filters on commas with no escaping (§5, §14.17): a comma inside one filter
    # would silently become two filters, so it is refused here.
    if "," in text:
        raise ValueError(f"{kind} {text!r} contains a comma; pass two separate filters instead")
    return text


@dataclass(frozen=True, slots=True)
class Query:
    """Which entities to fetch and how: fields, children, filters, tag filters, order, paging."""

    fields: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    tag_filters: tuple[str, ...] = ()
    order: str | None = None
    offset_value: int = 0
    count_value: int = 0
    extra_params: tuple[tuple[str, str], ...] = field(default=())

    def select(self, fields: Iterable[str]) -> Query:
        """Only these fields (Python or JSON names), e.g. ``["id", "state"]``."""
        return replace(self, fields=self.fields + tuple(_strings("field", fields)))

    def select_children(self, children: Iterable[str]) -> Query:
        """Also return these children: ``tags``, ``configuration``, ``files``, ``hpc_jobs``..."""
        return replace(self, children=self.children + tuple(_strings("child", children)))

    def where(self, filters: Iterable[str] | str) -> Query:
        """Field filters such as ``"name~calib"`` or ``"state=Failed"``; all must hold."""
        items = [filters] if isinstance(filters, str) else list(filters)
        for item in _strings("filter", items):
            if not _FILTER.match(item):
                raise ValueError(
                    f"malformed filter {item!r}; expected <field><op><value> with op one of "
                    "= != ~ < <= > >="
                )
            _no_comma("filter", item)
        return replace(self, filters=self.filters + tuple(items))

    def where_tag(self, tag_filters: Iterable[str] | str) -> Query:
        """Tag filters such as ``"Replicate=3"`` or a bare ``"idmtools"`` (has the tag)."""
        items = [tag_filters] if isinstance(tag_filters, str) else list(tag_filters)
        for item in _strings("tag filter", items):
            if not _TAG_FILTER.match(item):
                raise ValueError(
                    f"malformed tag filter {item!r}; expected <tag>, or <tag><op><value> with "
                    "op one of = != ~ < <= > >="
                )
            _no_comma("tag filter", item)
        return replace(self, tag_filters=self.tag_filters + tuple(items))

    def orderby(self, order: str) -> Query:
        """Sort order, e.g. ``"date_created desc"``."""
        words = order.split()
        if not 1 <= len(words) <= 2 or (
            len(words) == 2 and words[1].lower() not in ("asc", "desc")
        ):
            raise ValueError(f"malformed orderby {order!r}; expected '<field> [asc|desc]'")
        return replace(self, order=order)

    def offset(self, offset: int) -> Query:
        """Skip the first ``offset`` matches."""
        return replace(self, offset_value=_non_negative("offset", offset))

    def count(self, count: int) -> Query:
        """Return at most ``count`` matches (0 = the server's default)."""
        return replace(self, count_value=_non_negative("count", count))

    def add_extra_params(self, params: Mapping[str, Any]) -> Query:
        """Extra query parameters, sent verbatim and overriding the ones above."""
        return replace(
            self,
            extra_params=self.extra_params + tuple((str(k), _render(v)) for k, v in params.items()),
        )

    def to_params(self, entity: str | type[Entity]) -> dict[str, str]:
        """The wire query parameters for listing ``entity`` (§5)."""
        cls = entity_type(entity)
        params: dict[str, str] = {}
        if self.fields:
            params["fields"] = ",".join(wire_field_name(cls, f) for f in self.fields)
        if self.children:
            params["children"] = ",".join(_child_name(cls, c) for c in self.children)
        if self.filters:
            params["filters"] = ",".join(_render_filter(cls, f) for f in self.filters)
        if self.tag_filters:
            params["tagfilters"] = ",".join(self.tag_filters)
        if self.order:
            first, *rest = self.order.split()
            params["orderby"] = " ".join([wire_field_name(cls, first), *rest])
        if self.offset_value:
            params["offset"] = str(self.offset_value)
        if self.count_value:
            params["count"] = str(self.count_value)
        params.update(self.extra_params)
        return params


def _strings(kind: str, values: Iterable[str]) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"pass a list of {kind} names, not a single string")
    out = list(values)
    for value in out:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{kind} names must be non-empty strings, got {value!r}")
    return out


def _non_negative(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _render(value: Any) -> str:
    # requests renders booleans as True/False (§5); keep that on the wire.
    return str(value)


def _child_name(cls: type[Entity], child: str) -> str:
    for name in cls.children_names:
        wire = wire_field_name(cls, name)
        if child in (name, wire):
            return wire
    known = ", ".join(sorted(cls.children_names))
    raise ValueError(f"{cls.__name__} has no child {child!r}; known children: {known}")


def _render_filter(cls: type[Entity], text: str) -> str:
    match = _FILTER.match(text)
    assert match is not None  # checked in where()
    name, op, value = match.groups()
    return f"{wire_field_name(cls, name)}{op}{value}"
