"""How much the local server sustains on this machine (so later benchmarks know where the server,
not the SDK, is the bottleneck): small GETs/s and simulations/s saved in batches of 100.

    python benchmarks/bench_server.py [--gets 4000] [--batches 60]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import uuid

import anyio
import httpx

from common import (
    Timer,
    add_profile_argument,
    apply_profile,
    chosen_profiles,
    report,
    server_process,
    wan_scaled,
)

CONFIG = json.dumps({"parameters": {"Base_Infectivity": 0.5}}).encode()


async def small_gets(url: str, token: str, total: int, concurrency: int) -> float:
    headers = {"X-COMPS-Token": token}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        suite = (await client.post("/api/Suites", json={"Suites": [{"Name": "b"}]})).json()
        path = f"/api/Suites/{suite['Ids'][0]}"
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                (await client.get(path)).raise_for_status()

        with Timer() as timer:
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker)
    return total / timer.seconds


async def batch_saves(url: str, token: str, batches: int, concurrency: int) -> float:
    headers = {"X-COMPS-Token": token}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        exp = (await client.post("/api/Experiments", json={"Experiments": [{"Name": "b"}]})).json()[
            "Ids"
        ][0]
        md5 = str(uuid.UUID(hashlib.md5(CONFIG).hexdigest()))
        sims = [
            {
                "Name": f"s{i}",
                "ExperimentId": exp,
                "Tags": {"i": i},
                "Files": [{"FileName": "config.json", "MD5Checksum": md5}],
            }
            for i in range(100)
        ]
        files = [
            ("not_a_file", ("Simulations", json.dumps(sims).encode(), "application/json")),
            (md5, ("config.json", CONFIG, "application/json")),
        ]
        remaining = batches

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                (await client.post("/api/Simulations", files=files)).raise_for_status()

        with Timer() as timer:
            async with anyio.create_task_group() as tg:
                for _ in range(concurrency):
                    tg.start_soon(worker)
    return batches * 100 / timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gets", type=int, default=4000)
    parser.add_argument("--batches", type=int, default=60)
    add_profile_argument(parser)
    args = parser.parse_args()
    figures = {}
    for profile in chosen_profiles(args):
        count, batches = wan_scaled(profile, args.gets), wan_scaled(profile, args.batches)
        with server_process() as server:
            apply_profile(server.url, server.token, profile)
            gets = {c: anyio.run(small_gets, server.url, server.token, count, c) for c in (1, 16)}
            sims = {c: anyio.run(batch_saves, server.url, server.token, batches, c) for c in (1, 4)}
        figures[profile] = {
            "small_gets_per_s": {f"concurrency_{c}": round(v) for c, v in gets.items()},
            "simulations_per_s_batches_of_100": {
                f"concurrency_{c}": round(v) for c, v in sims.items()
            },
        }
    report("local server throughput", figures)


if __name__ == "__main__":
    main()
