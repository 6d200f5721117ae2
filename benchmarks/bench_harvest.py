"""Harvest benchmark (issues 7, 19), one run, side by side, against the local server at two
profiles: loopback with 20 ms of added latency per request, and a WAN link (80 ms, 20 MB/s per
connection, 200 MB/s in all):

* many files: SIMS simulations x 2 files (output/InsetChart.json ~200 KB, output/big.bin 2 MB)
* one big file: a single 2 GiB output

(a) comps_async ``outputs.harvest`` / ``outputs.download``; (b) a pyCOMPS/getexpout-style
baseline: a process pool of CPU-count workers, one listing + whole-file GETs into memory per
simulation (new connection per call, as pyCOMPS), written to disk; (c) the floors: raw
concurrent httpx streaming GETs of the same URLs, bytes discarded (handed the URLs), and raw
aiohttp doing the same listing + GETs as the SDK (``floor_listing``: given only the experiment,
many files only). Each approach runs in its own process so that its peak RSS is its own.

    python benchmarks/bench_harvest.py [--sims 2000] [--big-gib 2] [--profile loopback|wan|both]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
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
    peak_rss_mb,
    report,
    run_child,
    server_process,
)

PATTERNS = ["output/InsetChart.json", "output/big.bin"]
LATENCY_S = 0.02


def workload(big_bytes: int) -> str:
    # sh is cheap to start; /dev/urandom keeps the bytes incompressible.
    return (
        f"-c 'mkdir -p output && head -c 200000 /dev/urandom > output/InsetChart.json && "
        f"head -c {big_bytes} /dev/urandom > output/big.bin'"
    )


async def prepare(url: str, token: str, sims: int, big_gib: float) -> dict[str, Any]:
    """Run SIMS simulations and one 2 GiB simulation; return the ids and the URLs to fetch."""
    async with ca.Session(url, token=token) as s:
        ids: dict[str, Any] = {}
        for name, count, big in (("many", sims, 2_000_000), ("big", 1, int(big_gib * 2**30))):
            exp = await s.experiments.create(
                ca.Experiment(
                    name=name,
                    configuration=ca.Configuration(
                        environment_name="Local",
                        executable_path="/bin/sh",
                        simulation_input_args=workload(big),
                    ),
                )
            )
            batch = [ca.Simulation(name=f"{name}{i}", experiment_id=exp.id) for i in range(count)]
            await s.simulations.save_all(batch, commission=True)
            final = await s.wait(experiment_id=exp, timeout=3600)
            if final.succeeded != count:
                raise RuntimeError(f"benchmark setup failed: {final}")
            ids[name] = str(exp.id)
        big_sim = (await s.experiments.simulations(ids["big"]))[0]
        ids["big_sim"] = str(big_sim.id)
        urls = []
        async for sim in s.simulations.iterate(ca.Query().where([f"experiment_id={ids['many']}"])):
            listing = await s.outputs.info(sim, PATTERNS)
            urls += [(m.url, m.length) for m in listing.values()]
        ids["many_urls"] = urls
        big = await s.outputs.info(big_sim, ["output/big.bin"])
        ids["big_url"] = next((m.url, m.length) for m in big.values())
        return ids


# --- (a) comps_async ---------------------------------------------------------------------------


async def run_sdk(
    url: str, token: str, ids: dict[str, Any], dest: Path, case: str
) -> dict[str, float]:
    async with ca.Session(url, token=token) as s:
        files = size = 0
        with Timer() as timer:
            if case == "many":
                async for got in s.outputs.harvest(ids["many"], PATTERNS, dest, concurrency=64):
                    if not got.ok:
                        raise RuntimeError(str(got.error))
                    files += 1
                    size += got.size
            else:
                paths = await s.outputs.download(
                    ca.Simulation(id=ids["big_sim"]), ["output/big.bin"], dest
                )
                files, size = 1, paths[0].stat().st_size
    return _figures(files, size, timer.seconds)


# --- (b) pyCOMPS / getexpout style -------------------------------------------------------------


def _pycomps_worker(args: tuple[str, str, list[str], str, list[str]]) -> tuple[int, int]:
    url, token, sim_ids, dest, patterns = args
    headers = {"X-COMPS-Token": token, "Accept": "application/json"}
    files = size = 0
    for sim_id in sim_ids:  # one listing per simulation, then whole files into memory
        listing = httpx.get(
            f"{url}/asset/Simulations/{sim_id}/Output?flatten=1", headers=headers, timeout=None
        ).json()["Resources"]
        for resource in listing:
            path = f"{resource['PathFromRoot']}/{resource['FriendlyName']}"
            if path not in patterns:
                continue
            body = httpx.get(resource["Url"], headers=headers, timeout=None).content
            target = Path(dest) / sim_id / resource["FriendlyName"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)
            files += 1
            size += len(body)
    return files, size


def run_pycomps(
    url: str, token: str, ids: dict[str, Any], dest: Path, case: str
) -> dict[str, float]:
    workers = os.cpu_count() or 2
    with Timer() as timer:
        if case == "many":
            sims = _sim_ids(url, token, ids["many"])
            chunks = [sims[i::workers] for i in range(workers)]
            with ProcessPoolExecutor(workers) as pool:
                results = list(
                    pool.map(
                        _pycomps_worker, [(url, token, c, str(dest), PATTERNS) for c in chunks]
                    )
                )
            files, size = sum(r[0] for r in results), sum(r[1] for r in results)
        else:
            files, size = _pycomps_worker(
                (url, token, [ids["big_sim"]], str(dest), ["output/big.bin"])
            )
    return _figures(files, size, timer.seconds)


def _sim_ids(url: str, token: str, experiment: str) -> list[str]:
    response = httpx.get(
        f"{url}/api/Simulations",
        headers={"X-COMPS-Token": token},
        params={"filters": f"ExperimentId={experiment}", "fields": "Id"},
    )
    return [s["Id"] for s in response.json()["Simulations"]]


# --- (c) the floor -----------------------------------------------------------------------------


async def run_floor(
    url: str, token: str, ids: dict[str, Any], dest: Path, case: str, to_disk: bool = False
) -> dict[str, float]:
    """Raw httpx streaming GETs, 64 at once; bytes discarded, or (``to_disk``) written to one
    file per URL with plain writes in a worker thread: the same work as the SDK minus the SDK."""
    targets = ids["many_urls"] if case == "many" else [ids["big_url"]]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        headers={"X-COMPS-Token": token}, limits=limits, timeout=None
    ) as client:
        size = 0
        queue = list(targets)

        async def worker() -> None:
            nonlocal size
            while queue:
                index = len(queue)
                file_url, _ = queue.pop()
                handle = (
                    await anyio.to_thread.run_sync(open, dest / f"{index}.bin", "wb")
                    if to_disk
                    else None
                )
                async with client.stream("GET", file_url) as response:
                    async for chunk in response.aiter_raw(1 << 20):
                        size += len(chunk)
                        if handle is not None:
                            await anyio.to_thread.run_sync(handle.write, chunk)
                if handle is not None:
                    handle.close()

        with Timer() as timer:
            async with anyio.create_task_group() as tg:
                for _ in range(64 if case == "many" else 1):
                    tg.start_soon(worker)
    return _figures(len(targets), size, timer.seconds)


async def run_floor_listing(
    url: str,
    token: str,
    ids: dict[str, Any],
    dest: Path,
    case: str,
    patterns: list[str] = PATTERNS,
) -> dict[str, float]:
    """The floor for a harvest (issue 26): raw aiohttp, 64 workers, each taking the next
    simulation, GETting its output listing and then its matched files (bytes discarded): the
    SDK's requests, given only the experiment, minus the SDK (and its disk and md5 work)."""
    headers = {"X-COMPS-Token": token, "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        files = size = 0
        with Timer() as timer:
            async with http.get(
                f"{url}/api/Simulations",
                params={"filters": f"ExperimentId={ids['many']}", "fields": "Id"},
            ) as response:
                sims = [s["Id"] for s in (await response.json())["Simulations"]]
            pending = iter(sims)

            async def worker() -> None:
                nonlocal files, size
                for sim_id in pending:
                    async with http.get(
                        f"{url}/asset/Simulations/{sim_id}/Output", params={"flatten": "1"}
                    ) as response:
                        listing = (await response.json())["Resources"]
                    for resource in listing:
                        if f"{resource['PathFromRoot']}/{resource['FriendlyName']}" in patterns:
                            async with http.get(resource["Url"]) as body:
                                async for chunk in body.content.iter_chunked(1 << 20):
                                    size += len(chunk)
                            files += 1

            async with anyio.create_task_group() as tg:
                for _ in range(64):
                    tg.start_soon(worker)
    return _figures(files, size, timer.seconds)


def _figures(files: int, size: int, seconds: float) -> dict[str, float]:
    return {
        "files": files,
        "seconds": round(seconds, 2),
        "files_per_s": round(files / seconds, 1),
        "MB_per_s": round(size / seconds / 1e6, 1),
        "peak_rss_MB": round(peak_rss_mb(), 1),
    }


async def run_floor_to_disk(
    url: str, token: str, ids: dict[str, Any], dest: Path, case: str
) -> dict[str, float]:
    return await run_floor(url, token, ids, dest, case, to_disk=True)


APPROACHES = {
    "comps_async": run_sdk,
    "pycomps_style": run_pycomps,
    "floor": run_floor,
    "floor_to_disk": run_floor_to_disk,
    "floor_listing": run_floor_listing,
}


def child(approach: str, case: str, params: str) -> None:
    """One measurement in this (fresh) process; prints its figures as JSON."""
    args = json.loads(params)
    dest = Path(tempfile.mkdtemp(prefix="harvest-"))
    cpu = time.process_time()
    try:
        fn = APPROACHES[approach]
        if approach == "pycomps_style":
            figures = fn(args["url"], args["token"], args["ids"], dest, case)
        else:
            figures = anyio.run(fn, args["url"], args["token"], args["ids"], dest, case)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    figures["client_cpu_s"] = round(time.process_time() - cpu, 2)  # (threads included)
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--big-gib", type=float, default=2.0)
    parser.add_argument("--cases", default="many,big", help="many (files), big (one file)")
    parser.add_argument(
        "--approaches", default=",".join(APPROACHES), help="a subset, e.g. comps_async,floor"
    )
    parser.add_argument("--repeat", type=int, default=1, help="alternate the approaches N times")
    parser.add_argument("--child", nargs=3, metavar=("APPROACH", "CASE", "PARAMS_FILE"))
    add_profile_argument(parser)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], Path(args.child[2]).read_text())
        return
    figures: dict[str, Any] = {"simulations": args.sims, "big_GiB": args.big_gib}
    with server_process() as server:
        started = time.perf_counter()
        ids = anyio.run(prepare, server.url, server.token, args.sims, args.big_gib)
        figures["setup_seconds"] = round(time.perf_counter() - started, 1)
        params = Path(server.data_dir) / "bench-params.json"
        params.write_text(json.dumps({"url": server.url, "token": server.token, "ids": ids}))
        for profile in chosen_profiles(args):
            # The link is switched through the server's own fault knobs, after the setup.
            apply_profile(server.url, server.token, profile, loopback_latency_s=LATENCY_S)
            results: dict[str, dict[str, Any]] = {}
            for case in args.cases.split(","):
                for run in range(args.repeat):  # alternating, so drift hits each alike
                    for approach in args.approaches.split(","):
                        if case == "big" and approach == "floor_listing":
                            continue  # one file: nothing to list ahead of
                        name = approach if run == 0 else f"{approach}#{run + 1}"
                        results.setdefault(case, {})[name] = run_child(
                            __file__, approach, case, str(params)
                        )
            figures[profile] = _summary(results)
    report("harvest", figures)


def _summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each case's figures and the ratios of the approaches that ran (ratios of the first run;
    with ``--repeat`` the later runs are listed beside them as ``approach#N``)."""
    ratios = {  # case: (unit, ratio name, numerator, denominator)
        "many": [
            ("files_per_s", "speedup_vs_pycomps", "comps_async", "pycomps_style"),
            ("files_per_s", "fraction_of_floor", "comps_async", "floor"),
            ("files_per_s", "fraction_of_floor_listing", "comps_async", "floor_listing"),
        ],
        "big": [
            ("MB_per_s", "fraction_of_floor", "comps_async", "floor"),
            ("MB_per_s", "fraction_of_floor_to_disk", "comps_async", "floor_to_disk"),
        ],
    }
    names = {"many": "many_files", "big": "one_big_file"}
    summary: dict[str, Any] = {}
    for case, figures in results.items():
        row: dict[str, Any] = dict(figures)
        for unit, name, top, bottom in ratios[case]:
            if top in figures and bottom in figures:
                row[name] = round(figures[top][unit] / figures[bottom][unit], 2)
        summary[names[case]] = row
    return summary


if __name__ == "__main__":
    main()
