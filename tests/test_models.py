"""Models against wire JSON written from the protocol spec (§4, §6, §7, §10, §11)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

import comps_async as ca
from comps_async.models import format_wire_datetime, md5_uuid

FIXTURES = Path(__file__).parent / "fixtures"
EXP_ID = "225abe99-7e2c-e411-93f2-f0921c167860"
SIM_ID = "dfc932fb-6c79-ec11-a9f2-9440c9be2c51"

SIMULATION_WIRE = {
    "Id": SIM_ID,
    "ExperimentId": EXP_ID,
    "Name": "s0",
    "Description": "one run",
    "Owner": "jdoe",
    "DateCreated": "2016-04-05T21:40:51.3930000Z",
    "LastModified": "2016-04-05T21:41:02.0000010Z",
    "SimulationState": "Succeeded",
    "ErrorMessage": "",
    "Tags": {"beta": "0.1", "Flag": None},
    "Configuration": {
        "EnvironmentName": "Local",
        "ExecutablePath": "python3",
        "SimulationInputArgs": "model.py",
        "MaximumNumberOfRetries": 0,
        "Priority": "Lowest",
        "MinCores": 1,
        "MaxCores": 1,
        "Exclusive": False,
        "AssetCollectionId": EXP_ID,
    },
    "Files": [
        {
            "FileName": "config.json",
            "MD5Checksum": "d41d8cd9-8f00-b204-e980-0998ecf8427e",
            "Length": 0,
            "Uri": "https://comps.idmod.org/asset/x",
            "FileType": "input",
            "Description": "",
        }
    ],
    "HPCJobs": [
        {
            "Id": EXP_ID,
            "JobId": 932,
            "JobState": "Finished",
            "Priority": "Normal",
            "WorkingDirectory": "\\\\server\\output\\dfc\\932",
            "OutputDirectorySize": 1024,
            "SubmitTime": "2016-04-05T21:40:52.1000000Z",
            "StartTime": "2016-04-05T21:40:53.0000000Z",
            "EndTime": "2016-04-05T21:41:00.5000000Z",
            "Configuration": {"EnvironmentName": "Local"},
        }
    ],
}

WIRE_EXAMPLES = {
    ca.Suite: {
        "Id": EXP_ID,
        "Name": "suite",
        "Description": "d",
        "Owner": "jdoe",
        "DateCreated": "2020-01-01T00:00:00.0000000Z",
        "LastModified": "2020-01-01T00:00:00.1234560Z",
        "Tags": {"a": "1"},
        "Configuration": {"EnvironmentName": "Calculon"},
    },
    ca.Experiment: {
        "Id": EXP_ID,
        "SuiteId": SIM_ID,
        "Name": "exp",
        "Owner": "jdoe",
        "DateCreated": "2020-01-01T00:00:00.0000000Z",
        "Configuration": {"Priority": "Normal", "NodeGroupName": "emod_abcd"},
    },
    ca.Simulation: SIMULATION_WIRE,
    ca.WorkItem: {
        "Id": SIM_ID,
        "Name": "wi",
        "Worker": {"name": "DockerWorker", "version": "1.0.0.0_RELEASE"},
        "EnvironmentName": "Calculon",
        "State": "Running",
        "Priority": "Normal",
        "HostName": "node1",
        "WorkingDirectory": "/w",
        "WorkingDirectorySize": 10,
        "AssetCollectionId": EXP_ID,
        "Files": [
            {
                "FileName": "WorkOrder.json",
                "FileType": "WorkOrder",
                "Description": "",
                "MD5Checksum": EXP_ID,
            }
        ],
    },
    ca.AssetCollection: {
        "Id": EXP_ID,
        "DateCreated": "2020-01-01T00:00:00.0000000Z",
        "Tags": {"Name": "inputs"},
        "Assets": [
            {
                "FileName": "model.py",
                "RelativePath": "bin",
                "MD5Checksum": SIM_ID,
                "Length": 12,
                "Tags": {},
            }
        ],
    },
}


@pytest.mark.parametrize("model", list(WIRE_EXAMPLES), ids=lambda m: m.__name__)
def test_round_trip_is_exact(model: type[ca.models.Entity]) -> None:
    wire = WIRE_EXAMPLES[model]
    assert model.from_wire(wire).to_wire() == _without_nulls(wire)


def _without_nulls(value: dict[str, object]) -> dict[str, object]:
    # Tag values of null are meaningful flags and stay; other nulls are omitted (§4.5).
    return {k: v for k, v in value.items() if v is not None or k == "Tags"}


def test_simulation_fields_use_the_special_aliases() -> None:
    sim = ca.Simulation.from_wire(SIMULATION_WIRE)
    assert sim.state is ca.SimulationState.Succeeded
    assert sim.hpc_jobs is not None and sim.hpc_jobs[0].job_state is ca.HpcState.Finished
    assert sim.files is not None and sim.files[0].md5_checksum == UUID(
        "d41d8cd98f00b204e9800998ecf8427e"
    )
    wire = sim.to_wire()
    assert "SimulationState" in wire and "HPCJobs" in wire and "State" not in wire
    assert wire["Files"][0]["MD5Checksum"] == "d41d8cd9-8f00-b204-e980-0998ecf8427e"
    assert ca.WorkItem.from_wire(WIRE_EXAMPLES[ca.WorkItem]).to_wire()["State"] == "Running"


def test_dates_are_seven_digits_out_and_tolerant_in() -> None:
    for text in (
        "2016-04-05T21:40:51.3930000Z",
        "2016-04-05T21:40:51.393Z",
        "2016-04-05T21:40:51.393000+00:00",
        "2016-04-05 21:40:51.393",
    ):
        sim = ca.Simulation.from_wire({"DateCreated": text})
        assert sim.date_created == datetime(2016, 4, 5, 21, 40, 51, 393000, tzinfo=UTC)
        assert sim.to_wire()["DateCreated"] == "2016-04-05T21:40:51.3930000Z"
    # pyCOMPS's bug (§4.2): a whole-second value must still have seven digits.
    assert format_wire_datetime(datetime(2020, 1, 1, tzinfo=UTC)) == "2020-01-01T00:00:00.0000000Z"


def test_unknown_enum_names_are_kept() -> None:
    sim = ca.Simulation.from_wire({"SimulationState": "QueuedForCommission"})
    assert sim.state == "QueuedForCommission"
    assert sim.to_wire() == {"SimulationState": "QueuedForCommission"}
    wi = ca.WorkItem.from_wire({"State": "QueuedForResume", "Priority": "Urgent"})
    assert (wi.state, wi.priority) == ("QueuedForResume", "Urgent")


def test_worker_is_read_in_either_case_and_sent_as_pycomps_sends_it() -> None:
    wi = ca.WorkItem.from_wire({"Worker": {"Name": "DockerWorker", "Version": "1.0.0.0_RELEASE"}})
    assert wi.worker == ca.WorkerType(name="DockerWorker", version="1.0.0.0_RELEASE")
    assert wi.to_wire()["Worker"] == {"name": "DockerWorker", "version": "1.0.0.0_RELEASE"}


def test_unknown_keys_are_ignored() -> None:
    assert ca.Suite.from_wire({"Name": "x", "NewServerField": 1}).to_wire() == {"Name": "x"}


def test_output_metadata_and_its_path() -> None:
    meta = ca.OutputFileMetadata.from_wire(
        {
            "Id": EXP_ID,
            "Length": 10,
            "FriendlyName": "InsetChart.json",
            "PathFromRoot": "output",
            "Url": "https://comps.idmod.org/asset/download/x",
            "MimeType": "application/json",
            "MD5": "abc",
            "Type": "File",
        }
    )
    assert meta.path == "output/InsetChart.json"
    assert ca.OutputFileMetadata(friendly_name="stdout.txt").path == "stdout.txt"


@pytest.mark.parametrize("name", ["config.json", "campaign.json"])
def test_comps_doc_examples_as_simulation_files(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    file = ca.SimulationFile.from_bytes(name, data)
    assert file.md5_checksum == UUID(hashlib.md5(data).hexdigest())
    assert file.length == len(data)
    wire = file.to_wire()
    assert wire == {
        "FileName": name,
        "MD5Checksum": str(md5_uuid(data)),
        "Length": len(data),
        "FileType": "input",
        "Description": "",
    }
    assert "source" not in json.dumps(wire) and data.decode()[:20] not in json.dumps(wire)
    parsed = json.loads(data)  # the content is the real EMOD example
    assert "parameters" in parsed or "Events" in parsed


def test_save_wire_leaves_out_what_the_server_sets() -> None:
    sim = ca.Simulation.from_wire(SIMULATION_WIRE)
    wire = sim.to_save_wire()
    for key in ("DateCreated", "LastModified", "SimulationState", "HPCJobs", "ErrorMessage"):
        assert key not in wire
    assert "Length" not in wire["Files"][0] and "Uri" not in wire["Files"][0]


def test_file_sources_are_private_and_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "model.py"
    path.write_text("print(1)")
    from_path = ca.SimulationFile.from_path(path)
    assert from_path.file_name == "model.py" and from_path.md5_checksum is None
    assert from_path.source is not None and from_path.source.path == path
    assert "print" not in repr(from_path)
    md5_only = ca.AssetCollectionFile.from_md5("a.bin", "d41d8cd98f00b204e9800998ecf8427e")
    assert md5_only.source is None and md5_only.md5_checksum is not None


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ca.Experiment(name=""), "must not be empty"),
        (lambda: ca.Simulation(name="   "), "must not be empty"),
        (lambda: ca.Simulation(id="not-a-uuid"), "UUID"),
        (
            lambda: ca.SimulationFile.from_bytes("a.txt", b"x", md5_checksum=EXP_ID),
            "either data or an md5",
        ),
        (lambda: ca.SimulationFile.from_md5("../etc/passwd", EXP_ID), "base name"),
        (lambda: ca.AssetCollectionFile.from_md5("a", EXP_ID, relative_path="../up"), "'..'"),
        (lambda: ca.AssetCollectionFile.from_md5("a", EXP_ID, relative_path="/abs"), "relative"),
        (lambda: ca.AssetCollectionFile.from_md5("a", EXP_ID, relative_path="C:\\x"), "relative"),
        (lambda: ca.Configuration(max_cores=0), "must be at least 1"),
    ],
)
def test_invalid_input_is_a_clear_validation_error(build: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build()  # type: ignore[operator]


def test_data_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        ca.SimulationFile.from_bytes("a.txt", "text")  # type: ignore[arg-type]


def test_enum_values_match_names_on_the_wire() -> None:
    assert [s.value for s in ca.SimulationState][:3] == [
        "Created",
        "CommissionRequested",
        "Provisioning",
    ]
    assert {p.value for p in ca.Priority} == {
        "Lowest",
        "BelowNormal",
        "Normal",
        "AboveNormal",
        "Highest",
    }
    assert {r.value for r in ca.RelationType} == {"DependsOn", "Created"}
    assert {a.value for a in ca.AssetType} == {"Linked", "Output"}
    assert "Canceling" in {w.value for w in ca.WorkItemState}


def test_what_a_server_holds_is_read_as_is() -> None:
    """pyCOMPS passes server data through; one odd row must not break a page (issue 15 §7),
    while the same values from a caller are refused before anything is sent."""
    sim = ca.Simulation.from_wire(
        {
            "Id": str(uuid4()),
            "Name": "",
            "Configuration": {"MinCores": 0, "MaxCores": 0},
            "Files": [{"FileName": "dir/config.json", "MD5Checksum": str(uuid4())}],
        }
    )
    assert sim.name == "" and sim.configuration is not None
    assert sim.configuration.min_cores == 0 and sim.files[0].file_name == "dir/config.json"  # type: ignore[index]
    with pytest.raises(ValidationError):
        ca.Simulation(name="")
    with pytest.raises(ValidationError):
        ca.SimulationFile.from_md5("dir/config.json", uuid4())


@pytest.mark.parametrize("model", [ca.Simulation, ca.Experiment, ca.Suite, ca.Configuration])
def test_positional_arguments_get_a_message_that_says_what_to_write(model: type[Any]) -> None:
    """pyCOMPS users write Simulation("name", experiment_id); say "keyword arguments"."""
    with pytest.raises(TypeError, match=rf"{model.__name__} takes keyword arguments, e\.g\."):
        model("positional")
    if "name" in model.model_fields:
        assert model(name="x").name == "x"
