"""Set-up shared by test modules (plain functions: module-scoped fixtures call them too)."""

from __future__ import annotations

from pathlib import Path

import comps_async as ca

CONFIG = (Path(__file__).parent / "fixtures" / "config.json").read_bytes()


async def submit(
    session: ca.Session, count: int, args: str, name: str = "exp"
) -> tuple[ca.Experiment, list[ca.Simulation]]:
    """An experiment running ``python3 <args>`` on the local server, with ``count`` commissioned
    simulations that each carry the fixture config.json."""
    experiment = await session.experiments.create(
        ca.Experiment(
            name=name,
            configuration=ca.Configuration(
                environment_name="Local", executable_path="python3", simulation_input_args=args
            ),
        )
    )
    sims = [
        ca.Simulation(
            name=f"{name}-{i}",
            experiment_id=experiment.id,
            files=[ca.SimulationFile.from_bytes("config.json", CONFIG)],
        )
        for i in range(count)
    ]
    await session.simulations.save_all(sims, commission=True)
    return experiment, sims
