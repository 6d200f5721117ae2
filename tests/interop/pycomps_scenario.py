"""pyCOMPS (``idm-pycomps``), unchanged, against a COMPS server: the operations its users run.

    python pycomps_scenario.py URL USER PASSWORD WORKDIR

Prints one JSON line per operation (``{"op", "ok", "detail"}``) and exits 0 when all passed. It
runs in a process of its own because pyCOMPS keeps global state (one host per process); set
``XDG_RUNTIME_DIR`` to a private directory so its token cache stays out of the way.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from COMPS import Client
from COMPS.CredentialPrompt import CredentialPrompt
from COMPS.Data import (
    AssetCollection,
    AssetCollectionFile,
    Configuration,
    Experiment,
    QueryCriteria,
    Simulation,
    SimulationFile,
    Suite,
    WorkItem,
    WorkItemFile,
)
from COMPS.Data.Simulation import SimulationState
from COMPS.Data.WorkItem import RelationType, WorkerOrPluginKey, WorkItemState

URL, USER, PASSWORD, WORKDIR = sys.argv[1:5]
WORK = Path(WORKDIR)
SIMULATIONS = 300
DEADLINE_S = 240.0

# A model a real user might run: reads its config, writes an output tree with an empty file and
# a nested folder, fails when told to.
MODEL = b"""import json, os, sys, time
config = json.load(open("config.json"))
os.makedirs("output/nested dir", exist_ok=True)
json.dump({"x": config["x"], "double": 2 * config["x"]}, open("output/result.json", "w"))
open("output/empty.txt", "w").close()
open("output/nested dir/notes.txt", "w").write("x=%s" % config["x"])
print("ran with x =", config["x"], flush=True)
time.sleep(config.get("sleep", 0))
sys.exit(3 if config.get("fail") else 0)
"""
WORK_ORDER = json.dumps(
    {
        "WorkItem_Type": "DockerWorker",
        "Execution": {"Command": "python3 -c \"open('out.txt','w').write('work item ran')\""},
    }
)

results: list[dict[str, Any]] = []
state: dict[str, Any] = {}


class Prompt(CredentialPrompt):
    """What a user's script passes instead of the TK/console prompt."""

    def prompt(self) -> dict[str, str]:
        return {"Username": USER, "Password": PASSWORD}


def op(name: str) -> Callable[[Callable[[], Any]], None]:
    """Run one operation now and record whether it worked."""

    def run(fn: Callable[[], Any]) -> None:
        try:
            detail = fn()
            results.append({"op": name, "ok": True, "detail": detail})
        except Exception:
            results.append({"op": name, "ok": False, "detail": traceback.format_exc()[-1500:]})
        print(json.dumps(results[-1], default=str), flush=True)

    return run


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


def tool(*args: str) -> str:
    """``python -m COMPS <tool> ... -srv URL`` in WORK, as a user types it."""
    done = subprocess.run(
        [sys.executable, "-m", "COMPS", *args, "-srv", URL],
        cwd=WORK,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rc {done.returncode}: {done.stdout[-800:]} {done.stderr[-800:]}")
    return done.stdout + done.stderr


def config(**extra: Any) -> Configuration:
    return Configuration(
        environment_name="Local",
        executable_path="python3",
        simulation_input_args="model.py",
        **extra,
    )


@op("login with a CredentialPrompt")
def _() -> str:
    Client.login(URL, credential_prompt=Prompt())
    return Client.auth_manager().username


@op("environment macros")
def _() -> Any:
    from COMPS import AuthManager

    return sorted(AuthManager.get_environment_macros("Local"))


@op("create a suite")
def _() -> str:
    suite = Suite("interop suite", description="pyCOMPS scenario")
    suite.set_tags({"scenario": "pycomps"})
    suite.save()
    state["suite"] = suite
    return str(suite.id)


@op("get a suite by id")
def _() -> str:
    suite = Suite.get(state["suite"].id)
    assert suite.name == "interop suite", suite.name
    return suite.description


@op("create an experiment in the suite with a configuration")
def _() -> str:
    experiment = Experiment(
        "interop experiment", suite_id=state["suite"].id, configuration=config()
    )
    experiment.save()
    experiment.set_tags({"Kind": "sweep", "Owner note": "pyCOMPS"})
    state["experiment"] = experiment
    return str(experiment.id)


@op("get an experiment with children configuration and tags")
def _() -> Any:
    experiment = Experiment.get(
        state["experiment"].id, QueryCriteria().select_children(["tags", "configuration"])
    )
    assert experiment.configuration.executable_path == "python3"
    assert experiment.tags["Kind"] == "sweep", experiment.tags
    return experiment.tags


@op(f"Simulation.save_all of {SIMULATIONS} with files (one shared)")
def _() -> int:
    experiment_id = state["experiment"].id
    for i in range(SIMULATIONS):
        simulation = Simulation(f"sim {i:03d}", experiment_id=experiment_id)
        simulation.set_tags({"x": i, "parity": "even" if i % 2 == 0 else "odd"})
        simulation.add_file(SimulationFile("model.py", "input"), data=MODEL)
        body = {"x": i, "fail": i == SIMULATIONS - 1}
        simulation.add_file(SimulationFile("config.json", "input"), data=json.dumps(body).encode())
    Simulation.save_all(save_batch_callback=None)
    return SIMULATIONS


@op("get_simulations: all of them")
def _() -> int:
    simulations = state["experiment"].get_simulations()
    assert len(simulations) == SIMULATIONS, len(simulations)
    state["simulations"] = simulations
    return len(simulations)


@op("QueryCriteria offset/count paging")
def _() -> list[str]:
    qc = QueryCriteria().where(f"experiment_id={state['experiment'].id}").orderby("name")
    pages = [Simulation.get(query_criteria=qc.offset(o).count(100)) for o in (0, 100, 200, 300)]
    names = [s.name for page in pages for s in page]
    assert [len(p) for p in pages] == [100, 100, 100, 0], [len(p) for p in pages]
    assert names == sorted(names) and len(set(names)) == SIMULATIONS
    return names[:2]


@op("QueryCriteria select, filters and tag filters")
def _() -> int:
    qc = (
        QueryCriteria()
        .select(["id", "name", "state"])
        .select_children(["tags"])
        .where([f"experiment_id={state['experiment'].id}", "state=Created"])
        .where_tag(["parity=even"])
    )
    found = Simulation.get(query_criteria=qc)
    assert len(found) == SIMULATIONS // 2, len(found)
    assert all(s.tags["parity"] == "even" for s in found)
    return len(found)


@op("QueryCriteria orderby descending")
def _() -> str:
    qc = (
        QueryCriteria()
        .where(f"experiment_id={state['experiment'].id}")
        .orderby("name desc")
        .count(1)
    )
    (last,) = Simulation.get(query_criteria=qc)
    assert last.name == f"sim {SIMULATIONS - 1:03d}", last.name
    return last.name


@op("simulation files listed with md5")
def _() -> Any:
    simulation = Simulation.get(
        state["simulations"][0].id, QueryCriteria().select_children("files")
    )
    names = sorted(f.file_name for f in simulation.files)
    assert names == ["config.json", "model.py"], names
    model = next(f for f in simulation.files if f.file_name == "model.py")
    assert str(model.md5_checksum).replace("-", "") == hashlib.md5(MODEL).hexdigest()
    return names


@op("set, merge and delete tags")
def _() -> Any:
    experiment = state["experiment"]
    experiment.merge_tags({"Iteration": "1"})
    experiment.delete_tags({"Owner note": None})
    tags = Experiment.get(experiment.id, QueryCriteria().select_children("tags")).tags
    assert tags == {"Kind": "sweep", "Iteration": "1"}, tags
    experiment.set_tags({"Only": "this"})
    tags = Experiment.get(experiment.id, QueryCriteria().select_children("tags")).tags
    assert tags == {"Only": "this"}, tags
    return tags


@op("commission the experiment and poll until done")
def _() -> Any:
    state["experiment"].commission()
    qc = QueryCriteria().select(["id", "state"]).where(f"experiment_id={state['experiment'].id}")

    def done() -> bool:
        states = [s.state for s in Simulation.get(query_criteria=qc)]
        return all(s in (SimulationState.Succeeded, SimulationState.Failed) for s in states)

    wait_for(done, "simulations to finish")
    counts: dict[str, int] = {}
    for s in Simulation.get(query_criteria=qc):
        counts[s.state.name] = counts.get(s.state.name, 0) + 1
    assert counts == {"Succeeded": SIMULATIONS - 1, "Failed": 1}, counts
    return counts


@op("a failed simulation says why")
def _() -> str:
    qc = QueryCriteria().where([f"experiment_id={state['experiment'].id}", "state=Failed"])
    (failed,) = Simulation.get(query_criteria=qc)
    failed.refresh(QueryCriteria().select(["id", "name", "state", "error_message"]))
    assert failed.error_message and "3" in failed.error_message, failed.error_message
    state["failed"] = failed
    return failed.error_message


@op("output file info")
def _() -> Any:
    simulation = state["simulations"][5]
    info = simulation.retrieve_output_file_info(["output/result.json", "output/empty.txt"])
    assert [i.length for i in info][1] == 0
    return [(i.friendly_name, i.length) for i in info]


@op("output files, with an empty one and a nested folder with a space")
def _() -> Any:
    simulation = state["simulations"][5]
    paths = ["output/result.json", "output/empty.txt", "output/nested dir/notes.txt"]
    result, empty, notes = simulation.retrieve_output_files(paths)
    x = json.loads(result)["x"]
    assert empty == b"" and notes == f"x={x}".encode(), (empty, notes)
    return json.loads(result)


@op("output files as a zip")
def _() -> Any:
    data = state["simulations"][6].retrieve_output_files(None, as_zip=True)
    names = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert "output/result.json" in names and "stdout.txt" in names, names
    return names


@op("asset collection with an 11 MiB file (chunked upload) and a small one")
def _() -> str:
    big = os.urandom(11 * 1024 * 1024)
    collection = AssetCollection()
    collection.set_tags({"kind": "inputs"})
    collection.add_asset(AssetCollectionFile("big.bin", "data"), data=big, upload_callback=None)
    collection.add_asset(AssetCollectionFile("model.py"), data=MODEL)
    collection.save(upload_files_callback=None)
    state["collection"], state["big_md5"] = collection, hashlib.md5(big).hexdigest()
    return str(collection.id)


@op("asset collection read back with its assets")
def _() -> Any:
    collection = AssetCollection.get(
        state["collection"].id, QueryCriteria().select_children(["assets", "tags"])
    )
    by_name = {a.file_name: a for a in collection.assets}
    assert sorted(by_name) == ["big.bin", "model.py"], sorted(by_name)
    assert str(by_name["big.bin"].md5_checksum).replace("-", "") == state["big_md5"]
    assert by_name["big.bin"].relative_path == "data"
    return {name: a.length for name, a in by_name.items()}


@op("asset collection as a zip")
def _() -> Any:
    data = state["collection"].retrieve_as_zip()
    names = sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert len(names) == 2, names
    return names


@op("missing files answer: an asset collection by md5 of content COMPS lacks")
def _() -> Any:
    absent = uuid.UUID(hashlib.md5(os.urandom(16)).hexdigest())
    collection = AssetCollection()
    collection.add_asset(AssetCollectionFile("absent.bin", md5_checksum=absent))
    missing = collection.save(return_missing_files=True)
    assert missing == [absent], missing
    return [str(m) for m in missing]


@op("a simulation by md5 of content COMPS already has (no upload)")
def _() -> str:
    simulation = Simulation("by md5", experiment_id=state["experiment"].id)
    md5 = uuid.UUID(hashlib.md5(MODEL).hexdigest())
    simulation.add_file(SimulationFile("model.py", "input", md5_checksum=md5))
    simulation.save()
    state["by_md5"] = simulation
    return str(simulation.id)


@op("an experiment using the asset collection")
def _() -> str:
    experiment = Experiment(
        "uses assets",
        suite_id=state["suite"].id,
        configuration=config(asset_collection_id=state["collection"].id),
    )
    experiment.save()
    read = Experiment.get(experiment.id, QueryCriteria().select_children("configuration"))
    assert str(read.configuration.asset_collection_id) == str(state["collection"].id)
    return str(read.configuration.asset_collection_id)


@op("work item with a work order, commissioned, polled, outputs read")
def _() -> str:
    worker = WorkerOrPluginKey(name="DockerWorker", version="1.0.0.0_RELEASE")
    item = WorkItem("interop work item", worker, "Local")
    item.set_tags({"scenario": "pycomps"})
    item.add_work_order(data=WORK_ORDER.encode())
    item.add_file(WorkItemFile("input.txt", "input", ""), data=b"hello")
    item.save()
    item.commission()
    terminal = (WorkItemState.Succeeded, WorkItemState.Failed, WorkItemState.Canceled)

    def done() -> bool:
        item.refresh()
        return item.state in terminal

    wait_for(done, "the work item to finish")
    assert item.state == WorkItemState.Succeeded, (item.state, item.error_message)
    (out,) = item.retrieve_output_files(["out.txt"])
    assert out == b"work item ran", out
    state["work_item"] = item
    return item.state.name


@op("work item relations, both directions")
def _() -> Any:
    item, experiment = state["work_item"], state["experiment"]
    item.add_related_experiment(experiment.id, RelationType.Created)
    related = item.get_related_experiments()
    assert [e.id for e in related] == [experiment.id], related
    parents = experiment.get_parent_related_workitems()
    assert [w.id for w in parents] == [item.id], parents
    return str(related[0].id)


@op("get work items by tag")
def _() -> int:
    found = WorkItem.get(query_criteria=QueryCriteria().where_tag(["scenario=pycomps"]))
    assert [w.id for w in found] == [state["work_item"].id], found
    return len(found)


@op("cancel a running simulation")
def _() -> str:
    simulation = Simulation("sleeper", experiment_id=state["experiment"].id)
    simulation.add_file(SimulationFile("model.py", "input"), data=MODEL)
    body = json.dumps({"x": -1, "sleep": 120}).encode()
    simulation.add_file(SimulationFile("config.json", "input"), data=body)
    simulation.save()
    simulation.commission()

    def reached(*states: SimulationState) -> Callable[[], bool]:
        def check() -> bool:
            simulation.refresh()
            return simulation.state in states

        return check

    wait_for(reached(SimulationState.Running), "the simulation to run")
    simulation.cancel()
    wait_for(reached(SimulationState.Canceled), "the simulation to be canceled")
    return simulation.state.name


@op("python -m COMPS getuser")
def _() -> str:
    return tool("getuser", USER)[-200:]


@op("python -m COMPS status")
def _() -> str:
    out = tool("status", "Experiment", str(state["experiment"].id))
    assert "Succeeded" in out, out
    return out[-300:]


@op("python -m COMPS tail")
def _() -> str:
    out = tool("tail", "Simulation", str(state["simulations"][3].id), "stdout.txt")
    assert "ran with x =" in out, out
    return out[-200:]


@op("python -m COMPS getexpout")
def _() -> int:
    tool("getexpout", str(state["experiment"].id), "result.json")  # matched by file name
    xs = [json.loads(p.read_text())["x"] for p in WORK.rglob("result.json")]
    # One from each of the sweep (the failed one too); the canceled sleeper (x = -1) may have
    # been stopped before it wrote its own.
    assert sorted(x for x in xs if x >= 0) == list(range(SIMULATIONS)), len(xs)
    return len(xs)


@op("python -m COMPS getwiout")
def _() -> str:
    tool("getwiout", str(state["work_item"].id), "out.txt")
    (found,) = WORK.rglob("out.txt")
    assert found.read_text() == "work item ran"
    return found.relative_to(WORK).as_posix()


@op("python -m COMPS createac")
def _() -> str:
    folder = WORK / "ac-source"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    (folder / "sub" / "b.txt").write_text("b")
    out = tool("createac", str(folder), "--name", "from a folder")
    return out.strip().splitlines()[-1]


@op("python -m COMPS clonesim")
def _() -> str:
    tool("clonesim", str(state["simulations"][7].id))
    qc = QueryCriteria().where([f"experiment_id={state['experiment'].id}", "name=sim 007"])
    clones = Simulation.get(query_criteria=qc)
    assert len(clones) == 2, len(clones)
    return str(clones[-1].id)


@op("python -m COMPS rerunsims --createonly")
def _() -> str:
    out = tool("rerunsims", str(state["experiment"].id), "--createonly")
    qc = QueryCriteria().where([f"experiment_id={state['experiment'].id}", "name=sim 299"])
    assert len(Simulation.get(query_criteria=qc)) == 2
    return out.strip().splitlines()[-1]


@op("delete a suite")
def _() -> str:
    suite = Suite("to delete")
    suite.save()
    suite.delete()
    assert Suite.get(query_criteria=QueryCriteria().where("name=to delete")) == []
    return "deleted"


failed = [r["op"] for r in results if not r["ok"]]
print(json.dumps({"operations": len(results), "failed": failed}), flush=True)
sys.exit(1 if failed else 0)
