"""idmtools, unchanged, against the local COMPS server: a sweep, run and wait, then analyze.

Needs the ``interop`` extra (``pip install 'comps-async[interop]'``). In one terminal::

    comps-async serve --port 8100 --user me:secret

In the folder you run from, an ``idmtools.ini`` with the block this script asks for::

    [LOCAL_COMPS]
    type = COMPS
    endpoint = http://127.0.0.1:8100
    environment = Local

then log in once (the token cache is shared with pyCOMPS, so idmtools does not prompt) and run::

    COMPS_PASSWORD=secret comps-async login -s http://127.0.0.1:8100 -u me
    python examples/idmtools_offline.py --assets ./my-inputs

Prints one JSON line: the experiment id, how many simulations succeeded and the analyzer's
answer (the parameter with the highest result).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from idmtools.analysis.analyze_manager import AnalyzeManager
from idmtools.assets import AssetCollection
from idmtools.builders import SimulationBuilder
from idmtools.core import ItemType
from idmtools.core.platform_factory import Platform
from idmtools.entities.experiment import Experiment
from idmtools.entities.ianalyzer import IAnalyzer
from idmtools_models.python.json_python_task import JSONConfiguredPythonTask

# The model each simulation runs: reads its config, writes one JSON output.
MODEL = """import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--config")
config = json.load(open(parser.parse_args().config))
os.makedirs("output", exist_ok=True)
value = -(config["beta"] - 0.35) ** 2
json.dump({"beta": config["beta"], "value": value}, open("output/result.json", "w"))
"""


class BestBeta(IAnalyzer):
    """Reads output/result.json of every simulation; reduces to the beta with the best value."""

    def __init__(self) -> None:
        super().__init__(filenames=["output/result.json"], parse=True)

    def map(self, data: dict[str, Any], item: Any) -> dict[str, float]:
        return data["output/result.json"]

    def reduce(self, all_data: dict[Any, dict[str, float]]) -> dict[str, Any]:
        best = max(all_data.values(), key=lambda result: result["value"])
        return {"analyzed": len(all_data), "best_beta": best["beta"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--block", default="LOCAL_COMPS", help="the idmtools.ini block")
    parser.add_argument("--simulations", type=int, default=50)
    parser.add_argument("--assets", type=Path, help="a folder to send as an asset collection")
    args = parser.parse_args()

    platform = Platform(args.block)
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model.py"
        model.write_text(MODEL)
        task = JSONConfiguredPythonTask(script_path=str(model), parameters={"beta": 0.0})
        if args.assets:
            task.common_assets.add_assets(AssetCollection.from_directory(str(args.assets)))
        builder = SimulationBuilder()
        last = max(1, args.simulations - 1)
        betas = [round(0.1 + 0.5 * i / last, 4) for i in range(args.simulations)]
        builder.add_sweep_definition(
            lambda simulation, beta: simulation.task.set_parameter("beta", beta), betas
        )
        experiment = Experiment.from_builder(builder, task, name="idmtools on comps-async")
        experiment.tags = {"example": "idmtools_offline"}
        experiment.run(wait_until_done=True, platform=platform)

    analyzer = BestBeta()
    manager = AnalyzeManager(
        platform=platform,
        ids=[(experiment.uid, ItemType.EXPERIMENT)],
        analyzers=[analyzer],
        max_workers=2,
    )
    manager.analyze()
    succeeded = sum(1 for s in experiment.simulations if s.succeeded)
    summary = {"experiment": str(experiment.uid), "succeeded": succeeded, **analyzer.results}
    print(json.dumps(summary))
    sys.exit(0 if experiment.succeeded else 1)


if __name__ == "__main__":
    main()
