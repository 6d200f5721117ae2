"""idmtools' COMPS operations, with the paths comps_async does better going through it.

Subclasses of idmtools-platform-comps' own operations: whatever is not overridden here behaves
exactly as the stock platform (it is the stock code). Overridden:

- experiments: created once per run of a script (a resume key, below), status from one Stats
  request, simulation rows fetched only when the counts cannot say every simulation's state;
- simulations: ``batch_create`` is one ``save_all`` (batches of 100 / 38 MiB, several in flight,
  exactly once, commissioned as batches land); ``get_assets`` of outputs reads them through the
  verified, concurrent download engine;
- asset collections: md5 de-duplication, the fingerprint cache (an unchanged re-run hashes and
  uploads nothing) and parallel, resumable chunked uploads.

**Exactly once across a killed script.** COMPS has no idempotency keys; idmtools gives every
new Experiment a random id, so a script run again cannot be told from a new experiment by ids.
The platform therefore derives a *resume key* from what the script builds — the experiment's
name, suite, tags and number of simulations — and keeps it in a tag (``RESUME_TAG``) while the
experiment is being created. A run that finds an experiment still carrying its key takes it up
again; its simulations carry comps_async's keys (the experiment id and their position), so
those that landed are found, not created twice. Once every simulation exists and is
commissioned, the tag is removed: running the script again later makes a new experiment, as
with the stock platform.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
from COMPS.Data import AssetCollection as COMPSAssetCollection
from COMPS.Data import Configuration as COMPSConfiguration
from COMPS.Data import Experiment as COMPSExperiment
from COMPS.Data import QueryCriteria
from COMPS.Data import Simulation as COMPSSimulation
from COMPS.Data.Simulation import SimulationState
from idmtools.core import EntityStatus
from idmtools.entities.experiment import Experiment
from idmtools.entities.simulation import Simulation
from idmtools_platform_comps.comps_operations.asset_collection_operations import (
    CompsPlatformAssetCollectionOperations,
)
from idmtools_platform_comps.comps_operations.experiment_operations import (
    CompsPlatformExperimentOperations,
)
from idmtools_platform_comps.comps_operations.simulation_operations import (
    CompsPlatformSimulationOperations,
)
from idmtools_platform_comps.utils.general import clean_experiment_name, convert_comps_status
from idmtools_platform_comps.utils.scheduling import scheduled

from .. import models as ca
from .._query import Query
from ..errors import CompsError

if TYPE_CHECKING:
    from .platform import COMPSAsyncPlatform

# idmtools' logger for what a user reads.
user_logger = logging.getLogger("user")

__all__ = [
    "RESUME_TAG",
    "AsyncAssetCollectionOperations",
    "AsyncExperimentOperations",
    "AsyncSimulationOperations",
]

logger = logging.getLogger(__name__)

RESUME_TAG = "comps_async.resume"
_CONFIG_FIELDS = tuple(ca.Configuration.model_fields)


def _platform(ops: Any) -> COMPSAsyncPlatform:
    return ops.platform  # type: ignore[no-any-return]


# --- experiments ---------------------------------------------------------------------------


def resume_key(experiment: Experiment) -> str | None:
    """The key a run of a script gives its experiment (see the module docstring); None when
    the number of simulations is not known up front (a plain generator)."""
    try:
        count = len(experiment.simulations)
    except TypeError:
        return None
    tags = {str(k): str(v) for k, v in (experiment.tags or {}).items() if k != RESUME_TAG}
    basis = [experiment.name, str(experiment.parent_id or ""), sorted(tags.items()), count]
    digest = hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:24]
    return f"idmtools-{digest}"


@dataclass
class AsyncExperimentOperations(CompsPlatformExperimentOperations):  # type: ignore[misc]
    """Experiments: created once per run (resume key), status from one Stats request."""

    def platform_create(self, experiment: Experiment, **kwargs: Any) -> COMPSExperiment:
        experiment.name = clean_experiment_name(experiment.name)
        key = resume_key(experiment)
        if key is not None:
            engine = _platform(self).engine
            found = engine.call(
                engine.session.experiments.list,
                Query().select(["id"]).where_tag(f"{RESUME_TAG}={key}").orderby("date_created"),
            )
            if found and found[-1].id is not None:
                return self._take_up(experiment, found[-1].id, key)
            experiment.tags = {**(experiment.tags or {}), RESUME_TAG: key}
        return super().platform_create(experiment, **kwargs)

    def _take_up(self, experiment: Experiment, experiment_id: UUID, key: str) -> COMPSExperiment:
        """Continue an experiment a killed run of the same script had started."""
        user_logger.info(f"Taking up experiment {experiment_id}, created by an earlier run")
        experiment.uid = experiment_id
        experiment.tags = {**(experiment.tags or {}), RESUME_TAG: key}
        self.send_assets(experiment)  # the same collection: nothing is uploaded again
        return COMPSExperiment.get(
            id=experiment_id,
            query_criteria=QueryCriteria().select_children(["tags", "configuration"]),
        )

    def refresh_status(self, experiment: Experiment, **kwargs: Any) -> None:
        """One Stats request; the simulations' rows only when their states differ."""
        engine = _platform(self).engine
        try:
            counts = engine.call(engine.session.experiments.stats, experiment.uid)
        except CompsError:  # a host without Stats (PROTOCOL.md row 6): list, as stock does
            super().refresh_status(experiment, **kwargs)
            return
        simulations = list(experiment.simulations)
        states = [state for state, n in counts.items() if n]
        if len(states) == 1 and counts[states[0]] == len(simulations):
            status = convert_comps_status(SimulationState[states[0]])
            for simulation in simulations:
                simulation.status = status
            return
        super().refresh_status(experiment, **kwargs)

    def finish_creation(self, experiment: Experiment) -> None:
        """Every simulation exists and is commissioned: the resume key has done its job."""
        if RESUME_TAG not in (experiment.tags or {}):
            return
        engine = _platform(self).engine
        engine.call(engine.session.experiments.delete_tags, experiment.uid, [RESUME_TAG])
        experiment.tags.pop(RESUME_TAG, None)


# --- simulations ---------------------------------------------------------------------------


def _configuration(config: COMPSConfiguration | None) -> ca.Configuration | None:
    if config is None:
        return None
    values = {
        name: value.name if isinstance(value, Enum) else value
        for name in _CONFIG_FIELDS
        if (value := getattr(config, name, None)) is not None
    }
    return ca.Configuration(**values) if values else None


@dataclass
class AsyncSimulationOperations(CompsPlatformSimulationOperations):  # type: ignore[misc]
    """Simulations: one exactly-once ``save_all``; outputs through the download engine."""

    def batch_create(
        self,
        simulations: Iterable[Simulation],
        num_cores: int | None = None,
        priority: str | None = None,
        asset_collection_id: str | None = None,
        **kwargs: Any,
    ) -> list[Simulation]:
        everything = list(simulations)
        new = [s for s in everything if s.status is None]
        if not new:
            return everything
        if kwargs.get("scheduling", False) and not all(scheduled(s) for s in new):
            raise ValueError(
                "Scheduling is enabled but no 'WorkOrder.json' file was found in simulation "
                "assets. Please add a WorkOrder.json asset to your simulation by calling "
                "add_work_order(item, file_path)"
            )
        models = [self._model(s, num_cores, priority, asset_collection_id, **kwargs) for s in new]
        experiment = new[0].parent
        platform = _platform(self)
        engine = platform.engine
        # One key per creating call: the experiment, and how many simulations it held before
        # (an extended experiment's new simulations are not mistaken for its first ones).
        key = f"idmtools.{experiment.uid}.{len(everything) - len(new)}"
        engine.call(
            engine.session.simulations.save_all,
            models,
            key=key,
            commission=True,
            on_progress=platform.progress("Creating Simulations on Comps", len(models)),
        )
        for simulation, model in zip(new, models, strict=True):
            simulation.uid = model.id
            simulation._platform_object = COMPSSimulation.__internal_factory__(
                id=model.id,
                name=model.name,
                experiment_id=model.experiment_id,
                state="CommissionRequested",
                tags=dict(model.tags or {}),
                configuration=None,
            )
            simulation.status = EntityStatus.CREATED
            self.post_create(simulation)
            simulation.status = EntityStatus.RUNNING
        platform._experiments.finish_creation(experiment)
        return everything

    def _model(
        self,
        simulation: Simulation,
        num_cores: int | None,
        priority: str | None,
        asset_collection_id: str | None,
        **kwargs: Any,
    ) -> ca.Simulation:
        """The simulation as the stock platform would send it (its own configuration code)."""
        self.pre_create(simulation)
        simulation.platform = self.platform
        options = dict(kwargs)
        options.update(
            num_cores=num_cores,
            priority=priority,
            asset_collection_id=UUID(asset_collection_id)
            if isinstance(asset_collection_id, str)
            else asset_collection_id,
        )
        options.update(simulation._platform_kwargs)
        config = self.get_simulation_config_from_simulation(simulation, **options)
        if simulation.name:
            simulation.name = clean_experiment_name(simulation.name)
        files = []
        for asset in simulation.assets:
            work_order = asset.filename.lower() == "workorder.json" and scheduled(simulation)
            files.append(
                ca.SimulationFile.from_bytes(
                    asset.filename, asset.bytes, file_type="WorkOrder" if work_order else "input"
                )
            )
        if options.get("add_metadata"):
            from idmtools import __version__
            from idmtools.utils.json import IDMJSONEncoder

            metadata = json.dumps(simulation.task.to_dict(), cls=IDMJSONEncoder).encode()
            files.append(
                ca.SimulationFile.from_bytes(
                    "idmtools_metadata.json", metadata, description=f"IDMTools {__version__}"
                )
            )
        return ca.Simulation(
            name=clean_experiment_name(simulation.name or simulation.experiment.name),
            experiment_id=simulation.parent_id,
            configuration=_configuration(config),
            tags=dict(simulation.tags or {}),
            files=files,
        )

    def get_assets(
        self,
        simulation: Any,
        files: list[str],
        include_experiment_assets: bool = True,
        **kwargs: Any,
    ) -> dict[str, bytes]:
        """Outputs through the verified, concurrent download engine; ``Assets/...`` paths (and
        "every file", an empty list) as the stock platform reads them."""
        outputs = [f for f in files if not f.lower().startswith("assets")]
        assets = [f for f in files if f.lower().startswith("assets")]
        if not files:
            return super().get_assets(simulation, files, include_experiment_assets, **kwargs)  # type: ignore[no-any-return]
        got: dict[str, bytes] = {}
        if assets:
            got.update(super().get_assets(simulation, assets, include_experiment_assets, **kwargs))
        engine = _platform(self).engine
        got.update(engine.call(read_outputs, engine.session, simulation.id, outputs))
        return got


async def read_outputs(session: Any, item_id: Any, paths: list[str]) -> dict[str, bytes]:
    """Read several output files of one item at once (each verified by length and md5)."""
    got: dict[str, bytes] = {}

    async def read(path: str) -> None:
        got[path] = await session.outputs.read(item_id, path)

    async with anyio.create_task_group() as tg:
        for path in paths:
            tg.start_soon(read, path)
    return {path: got[path] for path in paths}


# --- asset collections ---------------------------------------------------------------------


@dataclass
class AsyncAssetCollectionOperations(CompsPlatformAssetCollectionOperations):  # type: ignore[misc]
    """Asset collections: the fingerprint cache, md5 dedup and parallel chunked uploads."""

    def platform_create(self, asset_collection: Any, **kwargs: Any) -> COMPSAssetCollection:
        files = []
        for asset in asset_collection:
            fields: dict[str, Any] = {"relative_path": asset.relative_path or None}
            if asset.absolute_path:
                files.append(
                    ca.AssetCollectionFile.from_path(asset.absolute_path, asset.filename, **fields)
                )
            elif asset.checksum is not None and asset._content is None:
                files.append(
                    ca.AssetCollectionFile.from_md5(asset.filename, asset.checksum, **fields)
                )
            else:
                files.append(
                    ca.AssetCollectionFile.from_bytes(asset.filename, asset.bytes, **fields)
                )
        engine = _platform(self).engine
        tags = dict(asset_collection.tags or {}) or None
        created = engine.call(engine.session.asset_collections.create, files, tags=tags)
        collection = COMPSAssetCollection.__internal_factory__(id=created.id, tags=tags)
        asset_collection.uid = created.id
        asset_collection._platform_object = collection
        asset_collection.platform = self.platform
        asset_collection.platform_id = self.platform.uid
        return collection
