"""A calibration loop: submit N simulations, wait, analyze one file each (``s.analyze``), pick
the next parameters; 3 iterations. Resumable for real: kill it at any point and run it again
with the same --name; every create carries a key derived from the name and the iteration, so
what landed is found again, only the rest is created, and each iteration ends with all of its
results.

    python examples/calibration_loop.py --server URL --token TOKEN [--name calib-1] [--sims 20]
    python examples/calibration_loop.py --local      # on an embedded local server
"""

from __future__ import annotations

import argparse
import json
import statistics
from importlib import resources
from pathlib import Path
from typing import Any

import anyio

import comps_async as ca
from comps_async.local import LocalComps

TARGET_PEAK = 0.25  # we calibrate Base_Infectivity so that the epidemic peaks at 25% infected


def config_for(beta: float, run: int) -> bytes:
    base = json.loads(
        resources.files("comps_async.local").joinpath("examples", "config.json").read_text()
    )
    base["parameters"].update(
        {"Base_Infectivity": beta, "Run_Number": run, "Simulation_Duration": 200}
    )
    return json.dumps(base).encode()


async def run_iteration(
    s: ca.Session,
    name: str,
    iteration: int,
    betas: list[float],
    collection: ca.AssetCollection,
    out: Path,
) -> dict[float, float]:
    """Peak infected fraction for each beta. Safe to re-run after a crash at any point: the
    experiment and the simulations are created with keys derived from the calibration's name
    and the iteration, so a re-run gets back what landed and creates only the rest."""
    key = f"{name}.iteration-{iteration}"
    experiment = await s.experiments.create(
        ca.Experiment(
            name=f"{name} iteration {iteration}",
            tags={"calibration": name, "iteration": str(iteration)},
            configuration=ca.Configuration(
                environment_name="Local",
                executable_path="python3",
                simulation_input_args="Assets/sir.py --config config.json "
                "--campaign Assets/campaign.json",
                asset_collection_id=collection.id,
            ),
        ),
        key=key,
    )
    sims = [
        ca.Simulation(
            name=f"b{beta:.4f}",
            experiment_id=experiment.id,
            tags={"beta": beta},
            files=[ca.SimulationFile.from_bytes("config.json", config_for(beta, i))],
        )
        for i, beta in enumerate(betas)
    ]
    await s.simulations.save_all(sims, key=key, commission=True)
    await s.wait(simulation_ids=sims, timeout=600)
    # Mapped as each chart lands; the cache makes a re-run map only what it has not seen.
    report = await s.analyze(sims, [PeakInfected()], cache_dir=out / "analysis-cache")
    peaks: dict[float, float] = report.reduced["PeakInfected"]
    if report.failures or len(peaks) != len(betas):  # never decide on part of the evidence
        raise RuntimeError(f"iteration {iteration}: {len(peaks)} of {len(betas)} results")
    return peaks


class PeakInfected(ca.Analyzer):
    """Peak infected fraction per simulation, reduced to {beta: peak}."""

    filenames = ("output/InsetChart.json",)

    def map(self, data: dict[str, Any], item: Any) -> tuple[float, float]:
        infected = data["output/InsetChart.json"]["Channels"]["Infected"]["Data"]
        return float(item.tags["beta"]), max(infected)

    def reduce(self, results: Any, failures: Any) -> dict[float, float]:
        return dict(results.values())


def next_betas(peaks: dict[float, float], count: int) -> list[float]:
    """Narrow the search around the betas whose peaks came closest to the target."""
    best = sorted(peaks, key=lambda b: abs(peaks[b] - TARGET_PEAK))[: max(3, count // 4)]
    low, high = min(best), max(best)
    spread = max(high - low, 0.02)
    centre = statistics.fmean(best)
    return [round(centre - spread + 2 * spread * i / max(count - 1, 1), 4) for i in range(count)]


async def calibrate(
    s: ca.Session, name: str, sims: int, out: Path, iterations: int = 3, quiet: bool = False
) -> dict[str, Any]:
    sir = resources.files("comps_async.local").joinpath("sir.py").read_bytes()
    campaign = json.loads(
        resources.files("comps_async.local").joinpath("examples", "campaign.json").read_text()
    )
    campaign["Events"][0]["Event_Coordinator_Config"]["Demographic_Coverage"] = 0.005
    collection = await s.asset_collections.create(
        [
            ca.AssetCollectionFile.from_bytes("sir.py", sir),
            ca.AssetCollectionFile.from_bytes("campaign.json", json.dumps(campaign).encode()),
        ],
        key=f"{name}.assets",
    )
    betas = [round(0.1 + 1.4 * i / (sims - 1), 4) for i in range(sims)]
    history = []
    for iteration in range(iterations):
        peaks = await run_iteration(s, name, iteration, betas, collection, out / str(iteration))
        best = min(peaks, key=lambda b: abs(peaks[b] - TARGET_PEAK))
        history.append(
            {
                "iteration": iteration,
                "best_beta": best,
                "peak": peaks[best],
                "simulations": len(peaks),
            }
        )
        if not quiet:
            print(f"iteration {iteration}: best Base_Infectivity {best} -> peak {peaks[best]:.3f}")
        betas = next_betas(peaks, sims)
    return {"name": name, "history": history}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server")
    parser.add_argument("--token")
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--name", default="calibration")
    parser.add_argument("--sims", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("calibration-output"))
    parser.add_argument("--json", action="store_true", help="print the history as JSON")
    args = parser.parse_args()
    run = dict(sims=args.sims, out=args.out, iterations=args.iterations, quiet=args.json)
    if args.local:
        async with LocalComps() as server, ca.Session(server.url, token=server.token) as s:
            result = await calibrate(s, args.name, **run)
    else:
        async with ca.Session(args.server, token=args.token) as s:
            result = await calibrate(s, args.name, **run)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    anyio.run(main)
