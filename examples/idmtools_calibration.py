"""A calibration loop in idmtools style, on the ``COMPS_ASYNC`` platform: kill it, run it again.

Each iteration sweeps a parameter around the best value so far, runs the experiment and waits,
analyses it with an unchanged ``IAnalyzer`` through ``AnalyzeManager``, and narrows the sweep.
What finished is kept in a state file (as idmtools-calibra keeps its iterations); an iteration
that was interrupted — even in the middle of creating its simulations — is taken up again by
the platform: the same experiment, each simulation exactly once.

Needs ``pip install 'comps-async[idmtools]'`` and an ``idmtools.ini`` block, for example::

    [CALIBRATION]
    type = COMPS_ASYNC
    endpoint = http://127.0.0.1:8100
    environment = Local

then (after ``comps-async login``)::

    python examples/idmtools_calibration.py --block CALIBRATION --sims 40

Prints one JSON line: each iteration's experiment, best parameter and how many it analysed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from idmtools.analysis.analyze_manager import AnalyzeManager
from idmtools.builders import SimulationBuilder
from idmtools.core import ItemType
from idmtools.core.platform_factory import Platform
from idmtools.entities.experiment import Experiment
from idmtools.entities.ianalyzer import IAnalyzer
from idmtools.entities.templated_simulation import TemplatedSimulations
from idmtools_models.python.json_python_task import JSONConfiguredPythonTask

# The "model": the closer beta is to 0.3, the better (a stand-in for a real simulation).
MODEL = """import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--config")
beta = json.load(open(parser.parse_args().config))["beta"]
os.makedirs("output", exist_ok=True)
json.dump({"beta": beta, "score": -abs(beta - 0.3)}, open("output/score.json", "w"))
"""


class BestBeta(IAnalyzer):
    """The beta with the best score, and how many simulations said so."""

    def __init__(self) -> None:
        super().__init__(filenames=["output/score.json"], parse=True)

    def map(self, data: dict[str, Any], item: Any) -> dict[str, float]:
        return data["output/score.json"]

    def reduce(self, all_data: dict[Any, dict[str, float]]) -> dict[str, Any]:
        best = max(all_data.values(), key=lambda r: r["score"])
        return {"best": best["beta"], "analyzed": len(all_data)}


def betas_around(center: float, width: float, count: int) -> list[float]:
    """The same list for the same inputs: a re-run builds exactly the experiment it had built."""
    return [round(center + width * (k / (count - 1) - 0.5), 6) for k in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--block", default="CALIBRATION", help="the idmtools.ini block")
    parser.add_argument("--sims", type=int, default=40, help="simulations per iteration")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--state", type=Path, default=Path("calibration-state.json"))
    args = parser.parse_args()

    platform = Platform(args.block)
    state = json.loads(args.state.read_text()) if args.state.exists() else {"iterations": []}
    center, width = 0.5, 0.8
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model.py"
        model.write_text(MODEL)
        for iteration in range(args.iterations):
            if iteration < len(state["iterations"]):  # finished before: take its answer
                center, width = state["iterations"][iteration]["best"], width / 2
                continue
            task = JSONConfiguredPythonTask(script_path=str(model), parameters={"beta": 0.0})
            builder = SimulationBuilder()
            builder.add_sweep_definition(
                lambda simulation, beta: simulation.task.set_parameter("beta", beta),
                betas_around(center, width, args.sims),
            )
            templated = TemplatedSimulations(base_task=task)
            templated.add_builder(builder)
            experiment = Experiment.from_template(
                templated, name=f"calibration iteration {iteration}", tags={"iteration": iteration}
            )
            experiment.run(wait_until_done=True, platform=platform)
            analyzer = BestBeta()
            AnalyzeManager(
                platform=platform,
                ids=[(experiment.uid, ItemType.EXPERIMENT)],
                analyzers=[analyzer],
            ).analyze()
            result = analyzer.results
            state["iterations"].append({"experiment": str(experiment.uid), **result})
            tmp = args.state.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, args.state)  # an iteration is recorded whole or not at all
            center, width = result["best"], width / 2
    print(json.dumps(state))


if __name__ == "__main__":
    main()
