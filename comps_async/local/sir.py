"""A small stochastic SEIR epidemic model that reads COMPS/EMOD-style inputs.

Run as ``python -m comps_async.local.sir [--config config.json] [--campaign campaign.json]`` in a
simulation's working directory. Reads ``parameters`` from the config (``Base_Infectivity``,
``Base_Infectious_Period``, ``Base_Incubation_Period``, ``Simulation_Duration``,
``Simulation_Timestep``, ``Default_Geography_Initial_Node_Population``, ``Run_Number``,
``Base_Mortality``) and ``OutbreakIndividual`` events from the campaign (``Start_Day``,
``Demographic_Coverage``, ``Number_Repetitions``, ``Timesteps_Between_Repetitions``), and writes
``output/InsetChart.json`` in EMOD's shape. Without a campaign, 0.1% of the population (at least
one person) is infectious on day 0, so a bare config still shows an epidemic; a campaign that
has no outbreak infects nobody, as in EMOD.

Stdlib only, and run by its path (``sir_configuration``), so that a simulation starts in a few
hundredths of a second.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["main", "simulate"]

_DEFAULT_PREVALENCE = 0.001  # infectious on day 0 when there is no campaign


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw: exact for small means, normal approximation for large ones."""
    if n <= 0 or p <= 0:
        return 0
    if p >= 1:
        return n
    mean = n * p
    if n < 64 or mean < 16 or n - mean < 16:
        return sum(1 for _ in range(n) if rng.random() < p)
    draw = round(rng.gauss(mean, math.sqrt(mean * (1 - p))))
    return min(n, max(0, draw))


def _outbreak_days(campaign: dict[str, Any], duration: int) -> dict[int, float]:
    """Day -> fraction of the population infected by OutbreakIndividual events."""
    days: dict[int, float] = {}
    for event in campaign.get("Events", []):
        coordinator = event.get("Event_Coordinator_Config", {})
        if coordinator.get("Intervention_Config", {}).get("class") != "OutbreakIndividual":
            continue
        start = int(event.get("Start_Day", 0))
        coverage = float(coordinator.get("Demographic_Coverage", 1.0))
        repeats = int(coordinator.get("Number_Repetitions", 1))
        every = int(coordinator.get("Timesteps_Between_Repetitions", 0) or 0)
        if every > 0 and "Number_Repetitions" not in coordinator:
            repeats = -1  # EMOD: a period without a count repeats for the whole run
        day, done = start, 0
        while day <= duration and (repeats < 0 or done < repeats):
            days[day] = max(days.get(day, 0.0), coverage)
            done += 1
            if every <= 0:
                break
            day += every
    return days


def simulate(config: dict[str, Any], campaign: dict[str, Any]) -> dict[str, Any]:
    """Run the model and return the InsetChart document."""
    params = config.get("parameters", config)
    beta = float(params.get("Base_Infectivity", 0.5))
    infectious_period = max(float(params.get("Base_Infectious_Period", 4)), 1e-6)
    incubation = float(params.get("Base_Incubation_Period", 0))
    duration = int(params.get("Simulation_Duration", 365))
    step = float(params.get("Simulation_Timestep", 1))
    population = int(params.get("Default_Geography_Initial_Node_Population", 1000))
    mortality = float(params.get("Base_Mortality", 0))
    rng = random.Random(int(params.get("Run_Number", 0)))
    outbreaks = _outbreak_days(campaign, duration)

    seeded_at_start = 0 if campaign else max(1, round(_DEFAULT_PREVALENCE * population))
    s, e, i, r = population - seeded_at_start, 0, seeded_at_start, 0
    channels: dict[str, list[float]] = {
        name: []
        for name in (
            "Susceptible Population",
            "Exposed Population",
            "Infected",
            "Recovered Population",
            "New Infections",
            "Statistical Population",
        )
    }
    p_recover = 1 - math.exp(-step / infectious_period)
    p_progress = 1.0 if incubation <= 0 else 1 - math.exp(-step / incubation)
    p_death = 1 - math.exp(-mortality * step)
    for day in range(duration):
        if day in outbreaks:
            seeded = _binomial(rng, s, outbreaks[day])
            s, e = s - seeded, e + seeded
        alive = s + e + i + r
        force = beta * i / alive if alive else 0.0
        new_exposed = _binomial(rng, s, 1 - math.exp(-force * step))
        new_infectious = _binomial(rng, e, p_progress)
        recovered = _binomial(rng, i, p_recover)
        s, e = s - new_exposed, e + new_exposed - new_infectious
        i, r = i + new_infectious - recovered, r + recovered
        if p_death:
            s -= _binomial(rng, s, p_death)
            r -= _binomial(rng, r, p_death)
        alive = s + e + i + r
        channels["Susceptible Population"].append(s / alive if alive else 0.0)
        channels["Exposed Population"].append(e / alive if alive else 0.0)
        channels["Infected"].append(i / alive if alive else 0.0)
        channels["Recovered Population"].append(r / alive if alive else 0.0)
        channels["New Infections"].append(float(new_infectious))
        channels["Statistical Population"].append(float(alive))
    units = {"New Infections": "Infections", "Statistical Population": "Population"}
    return {
        "Header": {
            "DateTime": datetime.now(UTC).strftime("%a %b %d %H:%M:%S %Y"),
            "DTK_Version": "comps_async.local.sir 1.0",
            "Report_Type": "InsetChart",
            "Report_Version": "3.2",
            "Start_Time": float(params.get("Start_Time", 0)),
            "Simulation_Timestep": step,
            "Timesteps": duration,
            "Channels": len(channels),
        },
        "Channels": {
            name: {"Units": units.get(name, ""), "Data": data} for name, data in channels.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: read inputs in the working directory, write output/InsetChart.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.json")
    parser.add_argument("--campaign", default=None)
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    campaign_name = args.campaign or config.get("parameters", {}).get("Campaign_Filename")
    campaign_path = Path(campaign_name) if campaign_name else None
    if campaign_path is not None and not campaign_path.exists():
        campaign_path = Path("Assets") / campaign_path
    campaign = (
        json.loads(campaign_path.read_text()) if campaign_path and campaign_path.exists() else {}
    )
    chart = simulate(config, campaign)
    out = Path("output")
    out.mkdir(exist_ok=True)
    (out / "InsetChart.json").write_text(json.dumps(chart))
    infected = chart["Channels"]["Infected"]["Data"]
    print(f"peak infected fraction {max(infected, default=0):.4f} over {len(infected)} days")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
