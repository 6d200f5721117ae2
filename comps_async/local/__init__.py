"""A COMPS-compatible server for one machine: the SDK's embedded default for demos and tests."""

from .faults import FaultConfig
from .process import LocalCompsProcess
from .recorder import RecordedRequest, WireRecorder
from .server import LocalComps, sir_configuration
from .state import Compat, ServerLimits

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
