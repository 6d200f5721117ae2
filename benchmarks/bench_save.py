"""Saving simulations (issue 5), side by side: 10,000 simulations with one shared 4 KB config
file each, against the local server (own process).

(a) comps_async ``save_all`` (batches of 100, 4 in flight, content shared by a batch sent once);
(b) pyCOMPS style: the same batches POSTed one after the other, each on a new connection, the
shared file attached once per simulation (pyCOMPS attaches a part per entity).

    python benchmarks/bench_save.py [--sims 10000]
"""

from __future__ import annotations

import argparse
import json
from importlib import resources

import anyio
import httpx

import comps_async as ca

from common import Timer, report, server_process

CONFIG = resources.files("comps_async.local").joinpath("examples", "config.json").read_bytes()


async def run_sdk(url: str, token: str, count: int) -> float:
    async with ca.Session(url, token=token) as s:
        exp = await s.experiments.create(ca.Experiment(name="save-bench"))
        config = ca.SimulationFile.from_bytes("config.json", CONFIG)
        sims = [
            ca.Simulation(name=f"s{i}", experiment_id=exp.id, tags={"i": i}, files=[config])
            for i in range(count)
        ]
        with Timer() as timer:
            await s.simulations.save_all(sims, concurrency=4)
    return timer.seconds


def run_pycomps(url: str, token: str, count: int) -> float:
    headers = {"X-COMPS-Token": token, "Accept": "application/json"}
    exp = httpx.post(
        f"{url}/api/Experiments",
        headers=headers,
        json={"Experiments": [{"Name": "save-bench-pycomps"}]},
    ).json()["Ids"][0]
    md5 = str(ca.models.md5_uuid(CONFIG))
    with Timer() as timer:
        for start in range(0, count, 100):
            batch = [
                {
                    "Name": f"s{i}",
                    "ExperimentId": exp,
                    "Tags": {"i": i},
                    "Files": [
                        {
                            "FileName": "config.json",
                            "MD5Checksum": md5,
                            "FileType": "input",
                            "Description": "",
                        }
                    ],
                }
                for i in range(start, min(start + 100, count))
            ]
            body = "[" + ", ".join(json.dumps(b) for b in batch) + "]"  # joined as pyCOMPS does
            files = [("not_a_file", ("Simulations", body.encode(), "application/json"))]
            files += [(md5, ("config.json", CONFIG, "application/json")) for _ in batch]
            httpx.post(
                f"{url}/api/Simulations", files=files, headers=headers, timeout=None
            ).raise_for_status()
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sims", type=int, default=10_000)
    args = parser.parse_args()
    with server_process() as server:
        sdk = anyio.run(run_sdk, server.url, server.token, args.sims)
        pycomps = run_pycomps(server.url, server.token, args.sims)
    report(
        "save simulations",
        {
            "simulations": args.sims,
            "comps_async": {"seconds": round(sdk, 2), "simulations_per_s": round(args.sims / sdk)},
            "pycomps_style": {
                "seconds": round(pycomps, 2),
                "simulations_per_s": round(args.sims / pycomps),
            },
            "speedup": round(pycomps / sdk, 1),
        },
    )


if __name__ == "__main__":
    main()
