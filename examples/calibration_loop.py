"""A calibration loop: submit N simulations, wait, harvest one file each, pick the next
parameters; 3 iterations. Resumable: run it again with the same --name and finished iterations
are reused (found by tag), an unfinished one is waited for instead of resubmitted.

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
    """Peak infected fraction for each beta, reusing a previous run of this iteration."""
    tags = {"calibration": name, "iteration": str(iteration)}
    found = await s.experiments.list(ca.Query().where_tag([f"{k}={v}" for k, v in tags.items()]))
    if found:
        experiment = found[0]
    else:
        experiment = await s.experiments.create(
            ca.Experiment(
                name=f"{name} iteration {iteration}",
                tags=tags,
                configuration=ca.Configuration(
                    environment_name="Local",
                    executable_path="python3",
                    simulation_input_args="Assets/sir.py --config config.json "
                    "--campaign Assets/campaign.json",
                    asset_collection_id=collection.id,
                ),
            )
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
        await s.simulations.save_all(sims, commission=True)
    await s.wait(experiment_id=experiment, timeout=600)
    by_id = {
        sim.id: float((sim.tags or {})["beta"] or 0)
        for sim in await s.experiments.simulations(experiment, ca.Query().select_children(["tags"]))
    }
    peaks: dict[float, float] = {}
    async for got in s.outputs.harvest(experiment, ["output/InsetChart.json"], out):
        if got.ok and got.local_path is not None:
            chart = json.loads(await anyio.Path(got.local_path).read_text())
            peaks[by_id[got.simulation_id]] = max(chart["Channels"]["Infected"]["Data"])
    return peaks


def next_betas(peaks: dict[float, float], count: int) -> list[float]:
    """Narrow the search around the betas whose peaks came closest to the target."""
    best = sorted(peaks, key=lambda b: abs(peaks[b] - TARGET_PEAK))[: max(3, count // 4)]
    low, high = min(best), max(best)
    spread = max(high - low, 0.02)
    centre = statistics.fmean(best)
    return [round(centre - spread + 2 * spread * i / max(count - 1, 1), 4) for i in range(count)]


async def calibrate(s: ca.Session, name: str, sims: int, out: Path) -> dict[str, Any]:
    sir = resources.files("comps_async.local").joinpath("sir.py").read_bytes()
    campaign = json.loads(
        resources.files("comps_async.local").joinpath("examples", "campaign.json").read_text()
    )
    campaign["Events"][0]["Event_Coordinator_Config"]["Demographic_Coverage"] = 0.005
    collection = await s.asset_collections.create(
        [
            ca.AssetCollectionFile.from_bytes("sir.py", sir),
            ca.AssetCollectionFile.from_bytes("campaign.json", json.dumps(campaign).encode()),
        ]
    )
    betas = [round(0.1 + 1.4 * i / (sims - 1), 4) for i in range(sims)]
    history = []
    for iteration in range(3):
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
    parser.add_argument("--out", type=Path, default=Path("calibration-output"))
    args = parser.parse_args()
    if args.local:
        async with LocalComps() as server, ca.Session(server.url, token=server.token) as s:
            await calibrate(s, args.name, args.sims, args.out)
        return
    async with ca.Session(args.server, token=args.token) as s:
        await calibrate(s, args.name, args.sims, args.out)


if __name__ == "__main__":
    anyio.run(main)
