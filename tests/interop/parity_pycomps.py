"""The wire-parity operations through pyCOMPS (``tests/test_wire_parity.py`` runs the same ones
through comps_async and compares what the server received).

    python parity_pycomps.py URL USER PASSWORD DATA_DIR

Each operation is preceded by a mark (``PUT /_local/wire/mark/<label>``) so that the server's
recorder can tell the operations apart. ``DATA_DIR`` holds the inputs both clients send.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

import requests
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
)
from COMPS.Data.Simulation import SimulationState

URL, USER, PASSWORD, DATA = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
inputs = json.loads((DATA / "inputs.json").read_text())


class Prompt(CredentialPrompt):
    def prompt(self) -> dict[str, str]:
        return {"Username": USER, "Password": PASSWORD}


def mark(label: str) -> None:
    requests.put(f"{URL}/_local/wire/mark/{quote(label)}", timeout=10).raise_for_status()


mark("login")
Client.login(URL, credential_prompt=Prompt())

mark("create experiment")
experiment = Experiment(
    inputs["experiment"], configuration=Configuration(**inputs["configuration"])
)
experiment.save()

mark("save simulations sharing one file")
shared = (DATA / "model.py").read_bytes()
for name, tags in inputs["simulations"]:
    simulation = Simulation(name, experiment_id=experiment.id)
    simulation.set_tags(tags)
    simulation.add_file(SimulationFile("model.py", "input"), data=shared)
Simulation.save_all(save_batch_callback=None)

mark("commission")
experiment.commission()

mark("wait")
qc = QueryCriteria().select(["id", "state"]).where(f"experiment_id={experiment.id}")
deadline = time.monotonic() + 240
while any(s.state != SimulationState.Succeeded for s in Simulation.get(query_criteria=qc)):
    assert time.monotonic() < deadline, "simulations did not finish"
    time.sleep(0.5)

mark("list by tag with paging")
found, offset = [], 0
while True:
    page = Simulation.get(
        query_criteria=QueryCriteria()
        .where([f"experiment_id={experiment.id}"])
        .where_tag([inputs["tag_filter"]])
        .offset(offset)
        .count(inputs["page_size"])
    )
    found += page
    offset += len(page)
    if len(page) < inputs["page_size"]:
        break
assert len(found) == inputs["expected_tagged"], len(found)

mark("set tags")
experiment.set_tags(inputs["set_tags"])

mark("merge tags")
experiment.merge_tags(inputs["merge_tags"])

mark("output info and one file")
first = min(found, key=lambda s: s.name)
(info,) = first.retrieve_output_file_info([inputs["output"]])
(content,) = first.retrieve_output_files_from_info([info])
assert json.loads(content) == {"ok": True}

mark("asset collection with a file over 10 MiB")
collection = AssetCollection()
for name in inputs["assets"]:
    data = (DATA / name).read_bytes()
    collection.add_asset(AssetCollectionFile(name), data=data, upload_callback=None)
collection.save(upload_files_callback=None)

mark("done")
