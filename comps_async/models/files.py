"""File metadata models (protocol §7) and their private content source.

A file references its content one of three ways (§7.1): bytes the SDK holds (``from_bytes``), a
path the SDK will stream at save time (``from_path``), or an md5 the server already knows
(``from_md5``). The source is private and never serialised; the wire sees ``FileName`` and
``MD5Checksum`` only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike, fspath
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Self
from uuid import UUID

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from ._base import Md5, Tags, WireModel, from_server, md5_uuid

__all__ = [
    "AssetCollectionFile",
    "ContentSource",
    "SimulationFile",
    "WorkItemFile",
    "check_relative_path",
]


@dataclass(frozen=True, slots=True)
class ContentSource:
    """Where a file's bytes come from: exactly one of ``path`` or ``data``."""

    path: Path | None = None
    data: bytes | None = None

    @property
    def size(self) -> int | None:
        """Length in bytes when known without I/O."""
        return len(self.data) if self.data is not None else None

    def __repr__(self) -> str:  # never dump file contents into logs or tracebacks
        if self.path is not None:
            return f"ContentSource(path={str(self.path)!r})"
        return f"ContentSource(data=<{len(self.data or b'')} bytes>)"


def check_relative_path(value: str) -> str:
    """Reject absolute paths, drive letters and ``..``: a name must stay inside its directory."""
    for flavour in (PurePosixPath(value), PureWindowsPath(value)):
        if flavour.is_absolute() or flavour.drive or flavour.root:
            raise ValueError(f"{value!r} must be a relative path")
        if ".." in flavour.parts:
            raise ValueError(f"{value!r} must not contain '..'")
    return value


class _AssetFile(WireModel):
    """Common keys of every file entry: ``FileName``, ``MD5Checksum``, ``Length``, ``Uri``."""

    file_name: str
    md5_checksum: Md5 | None = Field(default=None, alias="MD5Checksum")
    length: int | None = Field(default=None, ge=0)
    uri: str | None = None

    _source: ContentSource | None = PrivateAttr(default=None)

    @field_validator("file_name")
    @classmethod
    def _base_name_only(cls, value: str, info: ValidationInfo) -> str:
        if from_server(info):  # what a server holds is kept; paths are checked on download
            return value
        if not value.strip() or value in (".", ".."):
            raise ValueError("file name must not be empty, '.' or '..'")
        if "/" in value or "\\" in value or "\x00" in value:
            raise ValueError(
                f"file name {value!r} must be a base name; put directories in relative_path"
            )
        return value

    @model_validator(mode="after")
    def _attach_source(self, info: ValidationInfo) -> Self:
        source = (info.context or {}).get("source")
        if source is None:
            return self
        if not isinstance(source, ContentSource):
            raise TypeError("source must be a ContentSource")
        if source.data is not None:
            if self.md5_checksum is not None:
                raise ValueError("give either data or an md5 for a file, not both")
            self.md5_checksum = md5_uuid(source.data)
            self.length = len(source.data)
        self._source = source
        return self

    @property
    def source(self) -> ContentSource | None:
        """The content the SDK holds for this file (``None`` for md5-only references)."""
        # Read from pydantic's private-attribute store directly: ``self._source`` goes through
        # BaseModel.__getattr__, and a bulk save asks every file several times.
        private = self.__pydantic_private__
        return None if private is None else private.get("_source")

    @classmethod
    def _build(cls, fields: dict[str, Any], source: ContentSource | None) -> Self:
        return cls.model_validate(
            {k: v for k, v in fields.items() if v is not None}, context={"source": source}
        )

    @classmethod
    def from_bytes(cls, file_name: str, data: bytes, **fields: Any) -> Self:
        """A file whose content is ``data``; its md5 is computed now (no I/O)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data must be bytes, not {type(data).__name__}; encode text first")
        return cls._build({"file_name": file_name, **fields}, ContentSource(data=bytes(data)))

    @classmethod
    def from_path(
        cls, path: str | PathLike[str], file_name: str | None = None, **fields: Any
    ) -> Self:
        """A file streamed from ``path`` at save time; md5 and length are filled in then."""
        local = Path(fspath(path))
        if fields.get("md5_checksum") is not None:
            raise ValueError("give either a path or an md5 for a file, not both")
        return cls._build(
            {"file_name": file_name or local.name, **fields}, ContentSource(path=local)
        )

    @classmethod
    def from_md5(cls, file_name: str, md5: UUID | str, **fields: Any) -> Self:
        """A reference to content the server already holds (uploaded before, by anyone)."""
        return cls._build({"file_name": file_name, "md5_checksum": md5, **fields}, None)


class SimulationFile(_AssetFile):
    """A file of a Simulation (``Files`` child)."""

    file_type: str | None = "input"
    description: str | None = ""


class WorkItemFile(_AssetFile):
    """A file of a WorkItem (``Files`` child); the work order has ``file_type="WorkOrder"``."""

    file_type: str | None = "input"
    description: str | None = ""

    @classmethod
    def work_order(
        cls, order: Mapping[str, Any] | bytes, file_name: str = "WorkOrder.json"
    ) -> Self:
        """The work order, as pyCOMPS's ``add_work_order`` attaches it: ``WorkOrder.json`` with
        ``FileType: "WorkOrder"``. ``order`` is the worker's JSON document (a mapping, encoded
        here) or its bytes, e.g. ``{"WorkItem_Type": "DockerWorker", "Execution":
        {"ImageName": "...", "Command": "python3 Assets/analyze.py"}}``."""
        if isinstance(order, bytes | bytearray):
            data = bytes(order)
        elif isinstance(order, Mapping):
            data = json.dumps(order, indent=2).encode()
        else:
            raise TypeError(f"a work order is a mapping or bytes, not {type(order).__name__}")
        return cls.from_bytes(file_name, data, file_type="WorkOrder", description="")


class AssetCollectionFile(_AssetFile):
    """A file of an AssetCollection (``Assets`` child), optionally in a sub-directory."""

    relative_path: str | None = None
    tags: Tags | None = None

    @field_validator("relative_path")
    @classmethod
    def _inside_collection(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or from_server(info):  # checked again before anything is written
            return value
        return check_relative_path(value)

    @property
    def path_in_collection(self) -> str:
        """``relative_path/file_name`` with ``/`` separators."""
        rel = (self.relative_path or "").replace("\\", "/").strip("/")
        return f"{rel}/{self.file_name}" if rel else self.file_name
