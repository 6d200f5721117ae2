"""The same idmtools scenarios on any platform block (``type = COMPS`` or ``COMPS_ASYNC``): run
by ``tests/test_idmtools_platform.py`` once per type, in a folder with an ``idmtools.ini``.

Scenarios: a ``JSONConfiguredPythonTask`` sweep with an asset collection from a directory and
``run(wait_until_done=True)``; an AnalyzeManager pass with a two-file analyzer; an analyzer that
raises on one item; a suite; ``Experiment.from_id`` and extending it; an experiment with a
failing simulation and ``num_retries``; an SSMT work item. Prints one JSON line of what a user
observes (ids aside).
"""

from __future__ import annotations

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
from idmtools.entities.simulation import Simulation
from idmtools.entities.suite import Suite
from idmtools.entities.templated_simulation import TemplatedSimulations
from idmtools_models.python.json_python_task import JSONConfiguredPythonTask
from idmtools_platform_comps.ssmt_work_items.comps_workitems import SSMTWorkItem

MODEL = """import argparse, json, os, sys
parser = argparse.ArgumentParser()
parser.add_argument("--config")
config = json.load(open(parser.parse_args().config))
if config.get("fail"):
    sys.exit("asked to fail")
os.makedirs("output", exist_ok=True)
value = -(config["beta"] - 0.35) ** 2
json.dump({"beta": config["beta"], "value": value}, open("output/result.json", "w"))
open("output/trace.csv", "w").write("step,value\\n0,%s\\n1,%s\\n" % (value, value * 2))
"""


class BothFiles(IAnalyzer):
    """Reads a JSON and a CSV output of every simulation (idmtools parses both)."""

    def __init__(self) -> None:
        super().__init__(filenames=["output/result.json", "output/trace.csv"], parse=True)

    def map(self, data: dict[str, Any], item: Any) -> dict[str, Any]:
        trace = data["output/trace.csv"]  # a pandas DataFrame, as idmtools parses CSV
        return {
            "beta": data["output/result.json"]["beta"],
            "value": data["output/result.json"]["value"],
            "trace_rows": len(trace),
            "item_type": type(item).__name__,
            "tags_beta": str(item.tags.get("beta")),
        }

    def reduce(self, all_data: dict[Any, dict[str, Any]]) -> dict[str, Any]:
        best = max(all_data.values(), key=lambda r: r["value"])
        return {
            "analyzed": len(all_data),
            "best_beta": best["beta"],
            "rows": sorted({r["trace_rows"] for r in all_data.values()}),
            "item_types": sorted({r["item_type"] for r in all_data.values()}),
            "tags_match": all(r["tags_beta"] == str(r["beta"]) for r in all_data.values()),
        }


class RaisesOnOne(IAnalyzer):
    """Fails on the simulation whose beta is 0.1; counts the others."""

    def __init__(self) -> None:
        super().__init__(filenames=["output/result.json"], parse=True)

    def map(self, data: dict[str, Any], item: Any) -> float:
        beta = float(data["output/result.json"]["beta"])
        if beta == 0.1:
            raise ValueError("this analyzer fails on beta 0.1")
        return beta

    def reduce(self, all_data: dict[Any, float]) -> int:
        return len(all_data)


def sweep(model: Path, assets: Path, betas: list[float], name: str) -> Experiment:
    task = JSONConfiguredPythonTask(script_path=str(model), parameters={"beta": 0.0})
    task.common_assets.add_assets(AssetCollection.from_directory(str(assets)))
    builder = SimulationBuilder()
    builder.add_sweep_definition(
        lambda simulation, beta: simulation.task.set_parameter("beta", beta), betas
    )
    templated = TemplatedSimulations(base_task=task)
    templated.add_builder(builder)
    return Experiment.from_template(templated, name=name, tags={"scenario": name})


def analyze(platform: Any, experiment_id: Any, analyzer: IAnalyzer) -> Any:
    manager = AnalyzeManager(
        platform=platform, ids=[(experiment_id, ItemType.EXPERIMENT)], analyzers=[analyzer]
    )
    manager.analyze()
    return analyzer.results


def main() -> None:
    block, assets = sys.argv[1], Path(sys.argv[2])
    platform = Platform(block)
    seen: dict[str, Any] = {"platform": type(platform).__name__}
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model.py"
        model.write_text(MODEL)
        betas = [round(0.1 + 0.05 * i, 2) for i in range(8)]

        # A sweep in a suite, run and waited.
        suite = Suite(name="suite scenario")
        experiment = sweep(model, assets, betas, "sweep")
        suite.add_experiment(experiment)
        suite.run(wait_until_done=True)
        seen["sweep"] = {
            "succeeded": experiment.succeeded,
            "statuses": sorted(str(s.status) for s in experiment.simulations),
            "in_suite": str(experiment.parent_id) == str(suite.uid),
        }
        seen["experiment"] = str(experiment.uid)

        # Analysis: two files parsed by idmtools; then an analyzer that raises on one item.
        seen["analysis"] = analyze(platform, experiment.uid, BothFiles())
        try:
            seen["raising"] = {"result": analyze(platform, experiment.uid, RaisesOnOne())}
        except Exception as exc:  # the stock AnalyzeManager stops at the first failure
            seen["raising"] = {"raised": type(exc).__name__}

        # from_id, then extend with more simulations.
        again = Experiment.from_id(experiment.uid)
        seen["from_id"] = {
            "name": again.name,
            "simulations": len(again.simulations),
            "tags": {k: v for k, v in again.tags.items() if not k.startswith("comps_async.")},
        }
        again.add_simulations(
            [
                Simulation.from_task(
                    JSONConfiguredPythonTask(script_path=str(model), parameters={"beta": beta})
                )
                for beta in (0.8, 0.9)
            ]
        )
        again.run(wait_until_done=True)
        seen["extended"] = {"succeeded": again.succeeded}  # the test counts the rows

        # A failing simulation with retries.
        failing = Platform(block, num_retries=2)
        task = JSONConfiguredPythonTask(script_path=str(model), parameters={"beta": 0.5})
        builder = SimulationBuilder()
        builder.add_sweep_definition(
            lambda simulation, fail: simulation.task.set_parameter("fail", fail), [False, True]
        )
        templated = TemplatedSimulations(base_task=task)
        templated.add_builder(builder)
        broken = Experiment.from_template(templated, name="failing")
        broken.run(wait_until_done=True, platform=failing)
        seen["failing"] = {
            "succeeded": broken.succeeded,
            "statuses": sorted(str(s.status) for s in broken.simulations),
        }
        seen["failing_experiment"] = str(broken.uid)

        # An SSMT work item.
        work_item = SSMTWorkItem(name="ssmt scenario", command="python3 -c 'print(42)'")
        work_item.run(wait_until_done=True, platform=platform)
        seen["work_item"] = {"succeeded": work_item.succeeded}
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
