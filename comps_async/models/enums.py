"""COMPS enumerations (protocol §11). Values equal names because names travel on the wire."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AssetType",
    "HpcState",
    "Priority",
    "RelationType",
    "SimulationState",
    "TagOperationMode",
    "WorkItemState",
]


class _NamedEnum(StrEnum):
    """An enum whose values are its names, as they travel on the wire."""


class SimulationState(_NamedEnum):
    """State of a Simulation; terminal: Succeeded, Failed, Canceled."""

    Created = "Created"
    CommissionRequested = "CommissionRequested"
    Provisioning = "Provisioning"
    Commissioned = "Commissioned"
    Running = "Running"
    Retry = "Retry"
    Succeeded = "Succeeded"
    Failed = "Failed"
    CancelRequested = "CancelRequested"
    Canceled = "Canceled"


class WorkItemState(_NamedEnum):
    """State of a WorkItem; terminal: Succeeded, Failed, Canceled."""

    Created = "Created"
    CommissionRequested = "CommissionRequested"
    Commissioned = "Commissioned"
    Validating = "Validating"
    Running = "Running"
    Waiting = "Waiting"
    ResumeRequested = "ResumeRequested"
    CancelRequested = "CancelRequested"
    Canceled = "Canceled"
    Resumed = "Resumed"
    Canceling = "Canceling"
    Succeeded = "Succeeded"
    Failed = "Failed"


class HpcState(_NamedEnum):
    """State of an HPC job (``JobState``)."""

    NotSet = "NotSet"
    Configuring = "Configuring"
    Submitted = "Submitted"
    Validating = "Validating"
    ExternalValidation = "ExternalValidation"
    Queued = "Queued"
    Running = "Running"
    Finishing = "Finishing"
    Finished = "Finished"
    Failed = "Failed"
    Canceled = "Canceled"
    Canceling = "Canceling"


class Priority(_NamedEnum):
    """Scheduling priority."""

    Lowest = "Lowest"
    BelowNormal = "BelowNormal"
    Normal = "Normal"
    AboveNormal = "AboveNormal"
    Highest = "Highest"


class AssetType(_NamedEnum):
    """Kind of an asset (defined by pyCOMPS; not seen on the wire)."""

    Linked = "Linked"
    Output = "Output"


class RelationType(_NamedEnum):
    """How a WorkItem relates to another entity."""

    DependsOn = "DependsOn"
    Created = "Created"


class TagOperationMode(_NamedEnum):
    """How ``POST /{Plural}/{id}/tags`` applies the given tags."""

    Merge = "Merge"
    Replace = "Replace"
    Delete = "Delete"


TERMINAL_SIMULATION_STATES = frozenset(
    {SimulationState.Succeeded, SimulationState.Failed, SimulationState.Canceled}
)
ACTIVE_SIMULATION_STATES = frozenset(
    {
        SimulationState.CommissionRequested,
        SimulationState.Provisioning,
        SimulationState.Commissioned,
        SimulationState.Running,
        SimulationState.Retry,
    }
)
TERMINAL_WORK_ITEM_STATES = frozenset(
    {WorkItemState.Succeeded, WorkItemState.Failed, WorkItemState.Canceled}
)
