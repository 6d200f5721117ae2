"""Pydantic v2 models that mirror COMPS entities on the wire. Models are data: no I/O."""

from ._base import (
    Tags,
    TagValue,
    WireModel,
    format_wire_datetime,
    md5_uuid,
    parse_wire_datetime,
)
from .entities import (
    ENTITY_TYPES,
    AssetCollection,
    Configuration,
    Entity,
    Experiment,
    HpcJob,
    Simulation,
    Suite,
    WorkerType,
    WorkItem,
)
from .enums import (
    ACTIVE_SIMULATION_STATES,
    TERMINAL_SIMULATION_STATES,
    TERMINAL_WORK_ITEM_STATES,
    AssetType,
    HpcState,
    Priority,
    RelationType,
    SimulationState,
    TagOperationMode,
    WorkItemState,
)
from .files import AssetCollectionFile, ContentSource, SimulationFile, WorkItemFile
from .outputs import OutputFileMetadata

__all__ = [
    "ACTIVE_SIMULATION_STATES",
    "ENTITY_TYPES",
    "TERMINAL_SIMULATION_STATES",
    "TERMINAL_WORK_ITEM_STATES",
    "AssetCollection",
    "AssetCollectionFile",
    "AssetType",
    "Configuration",
    "ContentSource",
    "Entity",
    "Experiment",
    "HpcJob",
    "HpcState",
    "OutputFileMetadata",
    "Priority",
    "RelationType",
    "Simulation",
    "SimulationFile",
    "SimulationState",
    "Suite",
    "TagOperationMode",
    "TagValue",
    "Tags",
    "WireModel",
    "WorkItem",
    "WorkItemFile",
    "WorkItemState",
    "WorkerType",
    "format_wire_datetime",
    "md5_uuid",
    "parse_wire_datetime",
]


def entity_type(name_or_type: str | type[Entity]) -> type[Entity]:
    """The model class for ``"Simulation"``, ``"Simulations"`` or the class itself."""
    if isinstance(name_or_type, type):
        return name_or_type
    for cls in ENTITY_TYPES:
        if name_or_type.lower() in (cls.__name__.lower(), cls.plural.lower()):
            return cls
    raise ValueError(
        f"unknown entity type {name_or_type!r}; expected one of "
        + ", ".join(c.__name__ for c in ENTITY_TYPES)
    )
