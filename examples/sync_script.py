"""pyCOMPS-style synchronous code on comps_async.sync: no async/await anywhere.

python examples/sync_script.py --server URL --token TOKEN
"""

from __future__ import annotations

import argparse
import json
from importlib import resources

import comps_async as ca
from comps_async.local import sir_configuration
from comps_async.sync import Session


def run(server: str, token: str, count: int = 5) -> dict[str, object]:
    examples = resources.files("comps_async.local").joinpath("examples")
    config = examples.joinpath("config.json").read_bytes()
    campaign = examples.joinpath("campaign.json").read_bytes()  # the outbreak on day 1
    with Session(server, token=token) as s:
        experiment = s.experiments.create(
            ca.Experiment(
                name="sync example",
                configuration=sir_configuration(),
            )
        )
        sims = [
            ca.Simulation(
                name=f"s{i}",
                experiment_id=experiment.id,
                files=[
                    ca.SimulationFile.from_bytes("config.json", config),
                    ca.SimulationFile.from_bytes("campaign.json", campaign),
                ],
            )
            for i in range(count)
        ]
        s.simulations.save_all(sims)
        s.experiments.commission(experiment)
        final = s.wait(experiment_id=experiment, timeout=300)
        tail = s.outputs.tail(sims[0], "stdout.txt", 200)
        listed = [
            sim.name
            for sim in s.simulations.iterate(ca.Query().where([f"experiment_id={experiment.id}"]))
        ]
    return {
        "experiment_id": str(experiment.id),
        "succeeded": final.succeeded,
        "tail": tail,
        "listed": listed,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    print(json.dumps(run(args.server, args.token), indent=2))
