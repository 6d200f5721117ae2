"""comps_async: an async, high-throughput SDK for the COMPS REST API.

import comps_async as ca

async with ca.Session("http://127.0.0.1:8100", token=...) as s:
    exp = await s.experiments.create(ca.Experiment(name="calib"))
"""

import logging

from ._capabilities import Capabilities, StatsForm
from ._query import Query
from ._resources.base import IdLike
from ._resources.entities import Rerun
from ._resources.outputs import Harvest, Harvested, OutputOwner
from ._session import Session
from ._transfer.assets import BytesProgressCallback
from ._transfer.batching import BatchLimits, ProgressCallback
from ._transfer.download import DownloadSettings
from ._transfer.exactly_once import BATCH_TAG, KEY_TAG
from ._transfer.paths import UnsafePathError
from ._transfer.upload import UploadSettings
from ._waiting import WaitSettings, WaitStatus
from .analyze import (
    Analysis,
    AnalysisFailedError,
    AnalysisFailure,
    AnalysisReport,
    AnalyzedItem,
    Analyzer,
)
from .auth import CredentialPrompt
from .errors import (
    ApiError,
    AuthenticationError,
    BatchSaveError,
    ChecksumMismatchError,
    CompsError,
    ConflictError,
    DeadlineExceededError,
    KeyConflictError,
    MalformedResponseError,
    MissingAssetsError,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitedError,
    ServerError,
    TransferError,
)
from .models import (
    AssetCollection,
    AssetCollectionFile,
    AssetType,
    Configuration,
    Entity,
    Experiment,
    HpcJob,
    HpcState,
    OutputFileMetadata,
    Priority,
    RelationType,
    Simulation,
    SimulationFile,
    SimulationState,
    Suite,
    TagOperationMode,
    WorkerType,
    WorkItem,
    WorkItemFile,
    WorkItemState,
)
from .pipeline import CallNext, Pipeline, Policy

# (Auth, concurrency and logging are installed by every Session: not exported, so that they
# cannot be passed in policies= and applied twice.)
from .policies import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "BATCH_TAG",
    "KEY_TAG",
    "Analysis",
    "AnalysisFailedError",
    "AnalysisFailure",
    "AnalysisReport",
    "AnalyzedItem",
    "Analyzer",
    "ApiError",
    "AssetCollection",
    "AssetCollectionFile",
    "AssetType",
    "AuthenticationError",
    "BatchLimits",
    "BatchSaveError",
    "BytesProgressCallback",
    "CallNext",
    "Capabilities",
    "ChecksumMismatchError",
    "CompsError",
    "Configuration",
    "ConflictError",
    "CredentialPrompt",
    "DeadlineExceededError",
    "DownloadSettings",
    "Entity",
    "Experiment",
    "Harvest",
    "Harvested",
    "HpcJob",
    "HpcState",
    "IdLike",
    "KeyConflictError",
    "MalformedResponseError",
    "MissingAssetsError",
    "NotFoundError",
    "OutcomeUnknownError",
    "OutputFileMetadata",
    "OutputOwner",
    "Pipeline",
    "Policy",
    "Priority",
    "ProgressCallback",
    "Query",
    "RateLimitedError",
    "RelationType",
    "Rerun",
    "RetryPolicy",
    "ServerError",
    "Session",
    "Simulation",
    "SimulationFile",
    "SimulationState",
    "StatsForm",
    "Suite",
    "TagOperationMode",
    "TransferError",
    "UnsafePathError",
    "UploadSettings",
    "WaitSettings",
    "WaitStatus",
    "WorkItem",
    "WorkItemFile",
    "WorkItemState",
    "WorkerType",
]

# A library never configures logging; it only makes sure nothing is printed by default.
logging.getLogger(__name__).addHandler(logging.NullHandler())
