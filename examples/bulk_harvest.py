"""Harvest one file from every simulation of an experiment to disk, analysing each file while the
others are still downloading (the analysis runs in worker threads).

    python examples/bulk_harvest.py EXPERIMENT_ID --server URL --token TOKEN [--dest harvest/]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

import comps_async as ca


def analyse(path: Path) -> float:
    """Blocking work per file: the peak of the Infected channel."""
    return max(json.loads(path.read_text())["Channels"]["Infected"]["Data"])


async def harvest_and_analyse(s: ca.Session, experiment_id: str, dest: Path) -> dict[str, Any]:
    peaks: dict[str, float] = {}
    failures: dict[str, str] = {}
    analysed_before_last_download = 0
    async with anyio.create_task_group() as tg:

        async def work(sim_id: str, path: Path) -> None:
            peaks[sim_id] = await anyio.to_thread.run_sync(analyse, path)

        async for got in s.outputs.harvest(experiment_id, ["output/InsetChart.json"], dest):
            if got.ok and got.local_path is not None:
                analysed_before_last_download = len(peaks)
                tg.start_soon(work, str(got.simulation_id), got.local_path)
            else:
                failures[str(got.simulation_id)] = str(got.error)
    return {
        "files": len(peaks),
        "failures": failures,
        "mean_peak": sum(peaks.values()) / len(peaks) if peaks else None,
        "analysed_while_downloading": analysed_before_last_download,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment_id")
    parser.add_argument("--server")
    parser.add_argument("--token")
    parser.add_argument("--dest", type=Path, default=Path("harvest"))
    args = parser.parse_args()
    async with ca.Session(args.server, token=args.token) as s:
        print(json.dumps(await harvest_and_analyse(s, args.experiment_id, args.dest), indent=2))


if __name__ == "__main__":
    anyio.run(main)
