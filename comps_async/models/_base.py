"""Wire conventions shared by every model (protocol §4): PascalCase keys, 7-digit UTC dates,
enums by name with unknown names kept, md5 checksums as dashed UUIDs, nulls omitted."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Self, TypeVar
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
)

__all__ = [
    "FROM_SERVER",
    "AtLeastOne",
    "AtLeastZero",
    "EnumOrName",
    "Md5",
    "NonEmptyStr",
    "TagValue",
    "Tags",
    "WireDatetime",
    "WireModel",
    "format_wire_datetime",
    "from_server",
    "md5_uuid",
    "parse_wire_datetime",
    "to_wire_name",
]


def to_wire_name(field_name: str) -> str:
    """``experiment_id`` -> ``ExperimentId``: pyCOMPS capitalises each ``_``-separated word
    (``str.capitalize``, so the rest of each word is lower-cased). Overrides live on the fields."""
    return "".join(word.capitalize() for word in field_name.split("_"))


def parse_wire_datetime(value: Any) -> Any:
    """Tolerant ISO-8601 in (any fraction length, ``Z`` or offset, naive taken as UTC)."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "T", 1)
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def format_wire_datetime(value: datetime) -> str:
    """Exactly seven fractional digits and ``Z`` (§4.2): what pyCOMPS and COMPS expect."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


WireDatetime = Annotated[
    datetime,
    BeforeValidator(parse_wire_datetime),
    PlainSerializer(format_wire_datetime, return_type=str, when_used="json"),
]


def md5_uuid(data: bytes) -> UUID:
    """The md5 of ``data`` as COMPS writes it: the hex digest with dashes 8-4-4-4-12 (§4.3)."""
    return UUID(hashlib.md5(data, usedforsecurity=False).hexdigest())


def _md5_from_any(value: Any) -> Any:
    # Accept a plain 32-hex digest as well as the dashed form; UUID() handles both.
    return UUID(value) if isinstance(value, str) else value


Md5 = Annotated[UUID, BeforeValidator(_md5_from_any)]
"""An md5 checksum carried as a UUID (protocol §4.3)."""


FROM_SERVER = "comps_async.from_server"
"""Validation context key set by ``from_wire``: checks that guard what a caller sends (names,
cores, file names) do not reject what a server already holds (pyCOMPS passes server data
through, so one odd row must not break a page)."""


def from_server(info: ValidationInfo) -> bool:
    """Whether the model is being read from a server answer."""
    return bool((info.context or {}).get(FROM_SERVER))


def _not_blank(value: str, info: ValidationInfo) -> str:
    if not value.strip() and not from_server(info):
        raise ValueError("must not be empty or blank")
    return value


NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]


def _at_least(minimum: int) -> Any:
    def check(value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < minimum and not from_server(info):
            raise ValueError(f"must be at least {minimum}")
        return value

    return AfterValidator(check)


AtLeastOne = Annotated[int, _at_least(1)]
AtLeastZero = Annotated[int, _at_least(0)]

TagValue = str | int | float | bool | None
Tags = dict[str, TagValue]

E = TypeVar("E", bound=Enum)

# Enums travel by name (§4.4) and newer servers send names older clients lack (§14.11): try the
# enum first, keep anything else as the raw string instead of failing the whole response.
EnumOrName = Annotated[E | str, Field(union_mode="left_to_right")]


class WireModel(BaseModel):
    """Base of every COMPS model: PascalCase aliases, unknown keys ignored (forward compatible),
    Python names accepted too. Entities stay mutable so that saves can assign ids in place."""

    model_config = ConfigDict(
        alias_generator=to_wire_name,
        populate_by_name=True,
        extra="ignore",
        validate_assignment=True,
        use_enum_values=False,
        ser_json_inf_nan="constants",
    )

    def __init__(self, /, *args: Any, **data: Any) -> None:
        if args:  # pyCOMPS's Simulation("name", experiment_id) habit, said plainly
            name = type(self).__name__
            raise TypeError(
                f"{name} takes keyword arguments, e.g. {name}(name=..., ...); got "
                f"{len(args)} positional argument(s)"
            )
        super().__init__(**data)

    # Pydantic calls a model's own __init__ for nested values too, which would drop the
    # validation context (FROM_SERVER); marked as the base __init__, it keeps pydantic's own
    # path for those and runs only when a caller constructs a model.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def to_wire(self) -> dict[str, Any]:
        """The JSON object COMPS expects: wire names, enums by name, nulls omitted (§4.5)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Build from a decoded JSON object of the server (what it holds is accepted as is)."""
        return cls.model_validate(data, context={FROM_SERVER: True})
