"""A COMPS-compatible server for one machine: the SDK's embedded default for demos and tests."""

from .app import Compat, ServerLimits
from .faults import FaultConfig
from .process import LocalCompsProcess
from .recorder import RecordedRequest, WireRecorder
from .server import LocalComps, sir_configuration

__all__ = [
    "Compat",
    "FaultConfig",
    "LocalComps",
    "LocalCompsProcess",
    "RecordedRequest",
    "ServerLimits",
    "WireRecorder",
    "sir_configuration",
]
