"""idmtools' own COMPS scenarios that need the server to behave as COMPS does (issue 29), run by
``tests/test_interop.py`` in a process of its own, in a folder with an ``idmtools.ini``:

- scheduling: ``add_schedule_config`` attaches a WorkOrder.json (Command, NodeGroupName,
  NumCores, Environment) to each simulation and runs the experiment with ``scheduling=True``;
- a tag without a value, read back through pyCOMPS;
- an SSMT-style work item whose script logs back in with pyCOMPS from inside the worker
  (``Client.login(os.environ["COMPS_SERVER"])``, then ``WorkItem.get`` of its own id).

Prints one JSON line with what it saw; the test checks it and the server's database.
"""

from __future__ import annotations

import json
import sys
import time

from COMPS.Data import Experiment as COMPSExperiment
from COMPS.Data import QueryCriteria, WorkItem, WorkItemFile
from COMPS.Data.WorkItem import WorkerOrPluginKey, WorkItemState
from idmtools.assets import Asset
from idmtools.core.platform_factory import Platform
from idmtools.entities.command_task import CommandTask
from idmtools.entities.experiment import Experiment
from idmtools.entities.simulation import Simulation
from idmtools_platform_comps.utils.scheduling import add_schedule_config

REPORT = """import json, os, sys
os.makedirs("output", exist_ok=True)
keys = ["COMPS_SERVER", "COMPS_ENVIRONMENT", "COMPS_SIMULATION_GUID", "MY_SETTING"]
json.dump({"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in keys}},
          open("output/seen.json", "w"))
"""

LOGIN_BACK = """import json, os
from COMPS import Client
from COMPS.Data import WorkItem
Client.login(os.environ["COMPS_SERVER"])
me = WorkItem.get(os.environ["COMPS_WORKITEM_GUID"])
json.dump({"name": me.name}, open("me.json", "w"))
"""


def main() -> None:
    block = sys.argv[1]
    platform = Platform(block)
    command = "python3 Assets/report.py 10000 10 100 1234"
    simulations = [Simulation.from_task(CommandTask(command=command)) for _ in range(3)]
    experiment = Experiment(name="scheduled", simulations=simulations, tags={"KeyOnly": None})
    experiment.assets.add_asset(Asset(filename="report.py", content=REPORT))
    add_schedule_config(
        experiment,
        command=command,
        NodeGroupName="idm_abcd",
        NumCores=1,
        Environment={"MY_SETTING": "from the work order"},
    )
    experiment.run(wait_until_done=True, scheduling=True)
    seen = [
        json.loads(platform.get_files(sim, ["output/seen.json"])["output/seen.json"])
        for sim in experiment.simulations
    ]
    tags = COMPSExperiment.get(experiment.uid, QueryCriteria().select_children("tags")).tags

    work_item = WorkItem(
        "logs back in",
        WorkerOrPluginKey("DockerWorker", "1.0.0.0_RELEASE"),
        platform.environment,
    )
    work_item.add_work_order(
        data=json.dumps(
            {"WorkItem_Type": "DockerWorker", "Execution": {"Command": "python3 login_back.py"}}
        ).encode()
    )
    work_item.add_file(WorkItemFile("login_back.py", "input", ""), data=LOGIN_BACK.encode())
    work_item.save()
    work_item.commission()
    work_item.refresh()
    deadline = time.monotonic() + 120
    while work_item.state not in (WorkItemState.Succeeded, WorkItemState.Failed):
        if time.monotonic() > deadline:
            raise TimeoutError("the work item did not finish in 120 s")
        time.sleep(0.5)  # poll: pyCOMPS has no wait for work items
        work_item.refresh()
    me = work_item.retrieve_output_files(["me.json"]) if work_item.state.name == "Succeeded" else []
    print(
        json.dumps(
            {
                "experiment": str(experiment.uid),
                "succeeded": experiment.succeeded,
                "seen": seen,
                "tags": tags,
                "work_item": work_item.state.name,
                "me": json.loads(me[0]) if me else None,
            }
        )
    )


if __name__ == "__main__":
    main()
