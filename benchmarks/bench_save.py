"""Saving simulations (issue 5), side by side: 10,000 simulations with one shared 4 KB config
file each, against the local server (own process).

(a) comps_async ``save_all`` (batches of 100, in flight from 4 up to 16 as throughput grows,
content shared by a batch sent once);
(b) pyCOMPS style: the same batches POSTed one after the other, each on a new connection, the
shared file attached once per simulation (pyCOMPS attaches a part per entity);
(c) the floor: bare aiohttp POSTing the same multipart batches (the same JSON rows, reserved
tags and ``Owner`` included, from plain dicts; the shared file once per batch), 4 in flight — no
models, no pipeline, no exactly-once look-ups.

Client CPU (``time.process_time()``, this process only; the server runs in its own) is reported
per simulation for (a) and (c), and for an update of every simulation (a rename) through
``save_all`` beside the same update rows posted bare, from ``--repeat`` alternating runs
(median, and every run: this machine's speed drifts by tens of percent from minute to minute).
Each timed section starts after ``gc.collect()``: the collector's debt for the 10,000 models
built just before is then not charged to whichever call happens to allocate next.

    python benchmarks/bench_save.py [--sims 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any

import aiohttp
import anyio
import httpx

import comps_async as ca

from common import (
    Timer,
    add_profile_argument,
    apply_profile,
    chosen_profiles,
    report,
    server_process,
)

CONFIG = resources.files("comps_async.local").joinpath("examples", "config.json").read_bytes()


async def simulations(s: ca.Session, experiment: str, count: int) -> list[ca.Simulation]:
    """``count`` new simulations of a new experiment, sharing one config file."""
    exp = await s.experiments.create(ca.Experiment(name=experiment))
    config = ca.SimulationFile.from_bytes("config.json", CONFIG)
    return [
        ca.Simulation(name=f"s{i}", experiment_id=exp.id, tags={"i": i}, files=[config])
        for i in range(count)
    ]


async def run_sdk(url: str, token: str, count: int) -> tuple[float, float]:
    """Seconds and client CPU seconds of ``save_all``."""
    async with ca.Session(url, token=token) as s:
        sims = await simulations(s, "save-bench", count)
        gc.collect()
        cpu = time.process_time()
        with Timer() as timer:
            await s.simulations.save_all(sims)  # batches in flight: adaptive, from 4
        cpu = time.process_time() - cpu
    return timer.seconds, cpu


async def run_sdk_updates(url: str, token: str, count: int) -> tuple[float, list[str]]:
    """Client CPU seconds of a ``save_all`` that renames ``count`` saved simulations (the ids,
    for the floor)."""
    async with ca.Session(url, token=token) as s:
        sims = await simulations(s, "update-bench", count)
        await s.simulations.save_all(sims)
        for sim in sims:
            sim.name = f"{sim.name}-renamed"
        gc.collect()
        cpu = time.process_time()
        await s.simulations.save_all(sims)  # updates: Id, Name, ExperimentId (as pyCOMPS)
        cpu = time.process_time() - cpu
        return cpu, [str(sim.id) for sim in sims]


async def run_bare_updates(url: str, token: str, ids: list[str], experiment: str) -> float:
    """The update floor: the same update rows, posted as batches of 100, 4 in flight."""
    headers = {"X-COMPS-Token": token, "Accept": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        _, cpu = await post_batches(
            http,
            url,
            len(ids),
            lambda i: {"Id": ids[i], "Name": f"s{i}-again", "ExperimentId": experiment},
        )
    return cpu


async def run_bare_aiohttp(url: str, token: str, count: int) -> tuple[float, float]:
    """The floor: the same batches (the same rows; shared part once per batch) over one aiohttp
    session."""
    headers = {"X-COMPS-Token": token, "Accept": "application/json"}
    md5 = str(ca.models.md5_uuid(CONFIG))
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(
            f"{url}/api/Experiments", json={"Experiments": [{"Name": "save-bench-bare"}]}
        ) as r:
            exp = (await r.json())["Ids"][0]
        async with http.get(f"{url}/api/Users", params={"current": "true"}) as r:
            owner = (await r.json())["Users"][0]["UserName"]
        file = {"FileName": "config.json", "MD5Checksum": md5, "FileType": "input"}
        file["Description"] = ""
        call = uuid.uuid4().hex  # the reserved tags the SDK sends: the same bytes on the wire
        return await post_batches(
            http,
            url,
            count,
            lambda i: {
                "Tags": {
                    "comps_async.batch": f"{call}/{i // 100}",
                    "comps_async.key": f"{call}/{i}",
                    "i": i,
                },
                "Name": f"s{i}",
                "ExperimentId": exp,
                "Files": [file],
                "Owner": owner,
            },
            part=(md5, CONFIG, "config.json"),
        )


async def post_batches(
    http: aiohttp.ClientSession,
    url: str,
    count: int,
    row: Callable[[int], dict[str, Any]],
    part: tuple[str, bytes, str] | None = None,
) -> tuple[float, float]:
    """Seconds and client CPU seconds of POSTing ``row(i)`` for ``count`` simulations as bare
    multipart batches of 100 (with ``part``, (name, bytes, file name), once in each), 4 in
    flight."""
    starts = iter(range(0, count, 100))

    async def worker() -> None:
        for start in starts:
            rows = [row(i) for i in range(start, min(start + 100, count))]
            form = aiohttp.FormData()
            form.add_field(
                "not_a_file",
                json.dumps(rows).encode(),
                filename="Simulations",
                content_type="application/json",
            )
            if part is not None:
                name, data, file_name = part
                form.add_field(name, data, filename=file_name, content_type="application/json")
            async with http.post(f"{url}/api/Simulations", data=form) as response:
                response.raise_for_status()
                await response.read()

    gc.collect()
    cpu = time.process_time()
    with Timer() as timer:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker)
    return timer.seconds, time.process_time() - cpu


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
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of (a) and (c)")
    add_profile_argument(parser)
    args = parser.parse_args()
    figures: dict[str, Any] = {"simulations": args.sims}
    for profile in chosen_profiles(args):
        sdk_runs: list[tuple[float, float]] = []
        bare_runs: list[tuple[float, float]] = []
        update_runs: list[tuple[float, float]] = []
        with server_process() as server:
            apply_profile(server.url, server.token, profile)
            for _ in range(args.repeat):
                sdk_runs.append(anyio.run(run_sdk, server.url, server.token, args.sims))
                bare_runs.append(
                    anyio.run(
                        run_bare_aiohttp, server.url, server.token, args.sims, backend="asyncio"
                    )
                )
                updated, ids = anyio.run(run_sdk_updates, server.url, server.token, args.sims)
                floor = anyio.run(
                    run_bare_updates, server.url, server.token, ids, str(uuid.uuid4())
                )
                update_runs.append((updated / args.sims * 1e6, floor / args.sims * 1e6))
            pycomps = run_pycomps(server.url, server.token, args.sims)
        sdk = statistics.median(seconds for seconds, _ in sdk_runs)
        bare = statistics.median(seconds for seconds, _ in bare_runs)
        sdk_cpus = [cpu / args.sims * 1e6 for _, cpu in sdk_runs]
        bare_cpus = [cpu / args.sims * 1e6 for _, cpu in bare_runs]
        sdk_us, bare_us = statistics.median(sdk_cpus), statistics.median(bare_cpus)
        figures[profile] = {
            "comps_async": {
                "seconds": round(sdk, 2),
                "simulations_per_s": round(args.sims / sdk),
                "client_cpu_us_per_simulation": round(sdk_us, 1),
                "client_cpu_us_per_simulation_runs": [round(us, 1) for us in sdk_cpus],
            },
            "bare_aiohttp_floor": {
                "seconds": round(bare, 2),
                "simulations_per_s": round(args.sims / bare),
                "client_cpu_us_per_simulation": round(bare_us, 1),
                "client_cpu_us_per_simulation_runs": [round(us, 1) for us in bare_cpus],
            },
            "pycomps_style": {
                "seconds": round(pycomps, 2),
                "simulations_per_s": round(args.sims / pycomps),
            },
            "speedup": round(pycomps / sdk, 1),
            "cpu_per_simulation_vs_floor": round(sdk_us / bare_us, 2),
            "updates": {
                "client_cpu_us_per_simulation": [round(sdk, 1) for sdk, _ in update_runs],
                "floor_client_cpu_us_per_simulation": [round(bare, 1) for _, bare in update_runs],
                "cpu_per_simulation_vs_floor": round(
                    statistics.median(sdk for sdk, _ in update_runs)
                    / statistics.median(bare for _, bare in update_runs),
                    2,
                ),
            },
        }
    report("save simulations", figures)


if __name__ == "__main__":
    main()
