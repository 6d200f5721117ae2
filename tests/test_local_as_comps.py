"""The local server where idmtools' own COMPS scenarios meet it (issue 29): work orders run,
scripts in Assets execute, empty tags come back "", a failed start closes its job, jobs get the
worker's environment, strict environments and the unknown-assets message. Over real sockets;
idmtools itself drives the scheduling case in ``test_interop.py``."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import comps_async as ca
from comps_async.local import Compat, LocalComps, LocalCompsProcess

pytestmark = pytest.mark.anyio

# Reports what a job sees: its arguments and the variables a COMPS worker sets.
REPORT = b"""import json, os, sys
os.makedirs("output", exist_ok=True)
keys = ["COMPS_SERVER", "COMPS_ENVIRONMENT", "COMPS_SIMULATION_GUID", "COMPS_EXPERIMENT_GUID",
        "COMPS_WORKITEM_GUID", "MY_SETTING"]
json.dump({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in keys}},
          open("output/seen.json", "w"))
"""
WRAPPER = b'#!/bin/sh\necho "wrapped: $*" >&2\nexec "$@"\n'
NO_SHEBANG = b'mkdir -p output\necho "ran by sh" > output/plain.txt\n'


async def finished(session: ca.Session, sim: ca.Simulation) -> ca.Simulation:
    await session.wait(experiment_id=sim.experiment_id, timeout=60)
    return await session.simulations.get(sim.id, children=["hpc_jobs", "tags"])  # type: ignore[arg-type]


async def experiment_with(
    session: ca.Session, configuration: ca.Configuration, assets: dict[str, bytes]
) -> ca.Experiment:
    if assets:
        collection = await session.asset_collections.create(
            [ca.AssetCollectionFile.from_bytes(name, data) for name, data in assets.items()]
        )
        configuration = configuration.model_copy(update={"asset_collection_id": collection.id})
    return await session.experiments.create(
        ca.Experiment(name="as-comps", configuration=configuration)
    )


async def run_one(
    session: ca.Session, experiment: ca.Experiment, files: list[ca.SimulationFile] | None = None
) -> ca.Simulation:
    sim = ca.Simulation(name="s", experiment_id=experiment.id, files=files or [])
    await session.simulations.save(sim)
    await session.experiments.commission(experiment)
    return await finished(session, sim)


async def test_a_work_order_runs_its_command_with_its_environment(
    server: LocalComps, session: ca.Session
) -> None:
    """idmtools' scheduling: the experiment names no ExecutablePath; each simulation's
    WorkOrder.json holds the Command and Environment."""
    experiment = await experiment_with(
        session, ca.Configuration(environment_name="Calculon"), {"report.py": REPORT}
    )
    order = {
        "Command": "python3 Assets/report.py 10000 'two words'",
        "NodeGroupName": "idm_abcd",
        "NumCores": 1,
        "Environment": {"MY_SETTING": "from the work order"},
    }
    work_order = ca.SimulationFile.from_bytes(
        "WorkOrder.json", json.dumps(order).encode(), file_type="WorkOrder"
    )
    sim = await run_one(session, experiment, [work_order])
    assert sim.state is ca.SimulationState.Succeeded, sim.error_message
    seen = json.loads(await session.outputs.read(sim, "output/seen.json"))
    assert seen["argv"] == ["10000", "two words"]
    assert seen["env"] == {
        "COMPS_SERVER": server.url,
        "COMPS_ENVIRONMENT": "Calculon",
        "COMPS_SIMULATION_GUID": str(sim.id),
        "COMPS_EXPERIMENT_GUID": str(experiment.id),
        "COMPS_WORKITEM_GUID": None,
        "MY_SETTING": "from the work order",
    }


async def test_scripts_in_assets_run_with_and_without_a_shebang(session: ca.Session) -> None:
    """Assets arrive without an executable bit (content-addressed blobs); on COMPS's shares
    every file can be executed. A wrapper with ``#!`` runs; a script without one runs by sh."""
    assets = {"wrapper.sh": WRAPPER, "report.py": REPORT, "plain.sh": NO_SHEBANG}
    wrapped = await experiment_with(
        session,
        ca.Configuration(
            environment_name="Local",
            executable_path="Assets/wrapper.sh",
            simulation_input_args="python3 Assets/report.py inside",
        ),
        assets,
    )
    sim = await run_one(session, wrapped)
    assert sim.state is ca.SimulationState.Succeeded, sim.error_message
    assert json.loads(await session.outputs.read(sim, "output/seen.json"))["argv"] == ["inside"]
    assert b"wrapped: python3 Assets/report.py inside" in await session.outputs.read(
        sim, "stderr.txt"
    )

    plain = await experiment_with(
        session,
        ca.Configuration(environment_name="Local", executable_path="Assets/plain.sh"),
        assets,
    )
    sim = await run_one(session, plain)
    assert sim.state is ca.SimulationState.Succeeded, sim.error_message
    assert await session.outputs.read(sim, "output/plain.txt") == b"ran by sh\n"


@pytest.mark.parametrize(
    ("configuration", "reason"),
    [
        (ca.Configuration(environment_name="Local"), "names no ExecutablePath"),
        (
            ca.Configuration(environment_name="Local", executable_path="no-such-program-here"),
            "cannot start 'no-such-program-here'",
        ),
    ],
)
async def test_a_failed_start_fails_the_simulation_and_closes_its_job(
    session: ca.Session, configuration: ca.Configuration, reason: str
) -> None:
    experiment = await experiment_with(session, configuration, {})
    sim = await run_one(session, experiment)
    assert sim.state is ca.SimulationState.Failed
    assert sim.error_message and reason in sim.error_message
    assert sim.hpc_jobs
    job = sim.hpc_jobs[-1]
    assert job.job_state is ca.HpcState.Failed
    assert job.end_time is not None and job.start_time is not None
    assert job.error_message and reason in job.error_message
    assert reason in (await session.outputs.read(sim, "stderr.txt")).decode()


async def test_a_tag_without_a_value_comes_back_empty(session: ca.Session) -> None:
    experiment = await session.experiments.create(
        ca.Experiment(
            name="tags",
            configuration=ca.Configuration(environment_name="Local"),
            tags={"KeyOnly": None, "k": "v"},
        )
    )
    sim = ca.Simulation(name="s", experiment_id=experiment.id, tags={"Flag": None})
    await session.simulations.save(sim)
    await session.simulations.merge_tags(sim, {"Later": None})
    got = await session.simulations.get(sim.id, children=["tags"])  # type: ignore[arg-type]
    assert got.tags is not None
    assert (got.tags["Flag"], got.tags["Later"]) == ("", "")
    exp = await session.experiments.get(experiment.id, children=["tags"])  # type: ignore[arg-type]
    assert exp.tags is not None and exp.tags["KeyOnly"] == ""
    # The key is still there to filter on, as a flag tag.
    flagged = await session.simulations.list(
        ca.Query().where(f"ExperimentId={experiment.id}").where_tag("Flag")
    )
    assert [s.id for s in flagged] == [sim.id]


async def test_a_work_item_logs_back_in_from_inside(
    server: LocalComps, session: ca.Session
) -> None:
    """An SSMT-style work item reads COMPS_SERVER and its own id, and logs in to this server
    with what the worker gives it (no password anywhere in the job)."""
    script = b"""import json, os
import comps_async.sync as cas
with cas.Session(os.environ["COMPS_SERVER"]) as s:
    me = s.work_items.get(os.environ["COMPS_WORKITEM_GUID"])
    json.dump({"name": me.name, "server": os.environ["COMPS_SERVER"]}, open("me.json", "w"))
"""
    collection = await session.asset_collections.create(
        [ca.AssetCollectionFile.from_bytes("login_back.py", script)]
    )
    order = {
        "WorkItem_Type": "DockerWorker",
        "Execution": {"Command": "python3 Assets/login_back.py"},
    }
    work_item = ca.WorkItem(
        name="logs back in",
        environment_name="Local",
        worker=ca.WorkerType(name="DockerWorker", version="1.0.0.0_RELEASE"),
        asset_collection_id=collection.id,
        files=[ca.WorkItemFile.work_order(order)],
    )
    await session.work_items.save(work_item)
    await session.work_items.commission(work_item)
    await session.wait(work_item_id=work_item, timeout=60)
    done = await session.work_items.get(work_item.id)  # type: ignore[arg-type]
    stderr = await session.outputs.read(done, "stderr.txt")
    assert done.state is ca.WorkItemState.Succeeded, stderr.decode()
    me = json.loads(await session.outputs.read(done, "me.json"))
    assert me == {"name": "logs back in", "server": server.url}
    # The token the job was given stays out of its outputs.
    listed = await session.outputs.info(done)
    assert not [path for path in listed if "Authtoken" in path]


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[ca.Session]:
    async with (
        LocalComps(
            tmp_path / "strict", compat=Compat(environments=("Calculon", "SlurmStage"))
        ) as server,
        ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as session,
    ):
        yield session


async def test_a_strict_server_refuses_an_environment_it_does_not_offer(
    strict: ca.Session,
) -> None:
    assert await strict.environments() == ["Calculon", "SlurmStage"]
    with pytest.raises(ca.ApiError) as refused:
        await strict.experiments.create(
            ca.Experiment(name="x", configuration=ca.Configuration(environment_name="Nowhere"))
        )
    assert refused.value.status == 400 and "Nowhere" in str(refused.value)
    with pytest.raises(ca.CompsError, match="Invalid environment 'Nowhere'"):
        await strict.work_items.save(
            ca.WorkItem(
                name="w",
                environment_name="Nowhere",
                worker=ca.WorkerType(name="DockerWorker", version="1.0.0.0_RELEASE"),
                files=[ca.WorkItemFile.work_order({"Execution": {"Command": "python3 -V"}})],
            )
        )
    with pytest.raises(ca.NotFoundError):
        await strict.environment_macros("Nowhere")
    accepted = await strict.experiments.create(  # case-insensitive, as COMPS names match
        ca.Experiment(name="y", configuration=ca.Configuration(environment_name="calculon"))
    )
    assert accepted.id is not None


def test_serve_lists_the_environments_it_offers(tmp_path: Path) -> None:
    """``comps-async serve --environment`` makes the server strict, over its own process."""
    with LocalCompsProcess(tmp_path / "data", extra_args=("--environment", "Calculon")) as server:
        headers = {"X-COMPS-Token": server.token}
        listed = httpx.get(f"{server.url}/api/environments", headers=headers)
        assert listed.json() == {"Environments": [{"EnvironmentName": "Calculon"}]}
        refused = httpx.post(
            f"{server.url}/api/Experiments",
            headers=headers,
            json={"Experiments": [{"Name": "e", "Configuration": {"EnvironmentName": "Local"}}]},
        )
        assert refused.status_code == 400
        assert "Invalid environment 'Local'" in refused.json()["ResponseMessage"]


async def test_unknown_assets_are_named_as_comps_names_them(server: LocalComps) -> None:
    missing = str(uuid.UUID(hashlib.md5(b"never uploaded").hexdigest()))
    async with httpx.AsyncClient(
        base_url=server.url, headers={"X-COMPS-Token": server.token}
    ) as http:
        answer = await http.post(
            "/api/AssetCollections",
            files={
                "not_a_file": (  # pyCOMPS's name for the entity part
                    None,
                    json.dumps([{"Assets": [{"FileName": "a.bin", "MD5Checksum": missing}]}]),
                    "application/json",
                )
            },
        )
    assert answer.status_code == 400
    body = answer.json()
    assert body["ResponseMessage"] == f"Unknown assets referenced in request: {missing}"
    assert body["UntrackedIds"] == [missing]
