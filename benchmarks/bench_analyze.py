"""Analyze benchmark (issue 18), one run, side by side, against the local server in its own
process with 20 ms of added latency per request: SIMS simulations x 2 output files (a ~200 KB
InsetChart.json and a 2 MB binary); an analyzer that parses the JSON, sums one channel and
notes the binary's size; reduce = the total.

(a) comps_async ``Session.analyze`` (defaults: worker threads, a window of 16 items), and with
``--dask`` the same with a Dask ``distributed`` LocalCluster (CPU-count worker processes) as the
executor: map on the cluster's workers, reduce in the caller (the path past one machine);
(b) an AnalyzeManager-style baseline: a process pool (CPU-count workers, and idmtools' COMPS
default of 24), each worker fetching one listing and then every file whole into memory per item
pyCOMPS-style (a new connection per call), then mapping; results gathered, reduce at the end.
Each approach runs in its own process; peak RSS is that of the whole process tree (the pool's
workers included), sampled from /proc ten times a second.

    python benchmarks/bench_analyze.py [--sims 2000] [--dask]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import httpx

import comps_async as ca

from common import (
    Timer,
    TreeRss,
    add_profile_argument,
    apply_profile,
    chosen_profiles,
    report,
    run_child,
    server_process,
)

LATENCY_S = 0.02
CHANNEL = "Infected"
# ~200 KB of InsetChart-shaped JSON and 2 MB of incompressible bytes per simulation.
WORKLOAD = (
    "-c \"import json, os, random; os.makedirs('output', exist_ok=True); "
    "r = random.Random(len(os.getcwd())); "
    "data = [round(r.random(), 6) for _ in range(22000)]; "
    "json.dump({'Channels': {'Infected': {'Data': data}}}, open('output/InsetChart.json', 'w')); "
    "open('output/big.bin', 'wb').write(os.urandom(2000000))\""
)
FILES = ("output/InsetChart.json", "output/big.bin")


class SumChannel(ca.Analyzer):
    """Parse the chart, sum one channel, note the binary's size."""

    filenames: tuple[str, ...] = FILES

    def map(self, data: dict[str, Any], item: Any) -> tuple[float, int]:
        return sum(data[FILES[0]]["Channels"][CHANNEL]["Data"]), len(data.get(FILES[1], b""))

    def reduce(self, results: Mapping[UUID, Any], failures: Sequence[Any]) -> dict[str, Any]:
        return {
            "items": len(results),
            "sum": round(sum(r[0] for r in results.values()), 3),
            "binary_bytes": sum(r[1] for r in results.values()),
            "failures": len(failures),
        }


class SumChannelOnly(SumChannel):
    """The same from the JSON alone: the 2 MB binary stays on the server."""

    filenames = FILES[:1]


# Both files read (the harder case), or only the one the channel is in.
VARIANTS: dict[str, type[SumChannel]] = {
    "json_and_binary": SumChannel,
    "json_only": SumChannelOnly,
}


async def prepare(url: str, token: str, sims: int) -> str:
    async with ca.Session(url, token=token) as s:
        exp = await s.experiments.create(
            ca.Experiment(
                name="analyze-bench",
                configuration=ca.Configuration(
                    environment_name="Local",
                    executable_path="python3",
                    simulation_input_args=WORKLOAD,
                ),
            )
        )
        batch = [ca.Simulation(name=f"a{i}", experiment_id=exp.id) for i in range(sims)]
        await s.simulations.save_all(batch, commission=True)
        final = await s.wait(experiment_id=exp, timeout=7200)
        if final.succeeded != sims:
            raise RuntimeError(f"benchmark setup failed: {final}")
        return str(exp.id)


# --- (a) comps_async ---------------------------------------------------------------------------


async def run_sdk(
    url: str, token: str, experiment: str, variant: str, executor: Executor | None = None
) -> dict[str, Any]:
    first: list[float] = []
    analyzer = VARIANTS[variant]()
    with TreeRss() as rss, Timer() as timer:
        async with ca.Session(url, token=token) as s:
            report = await s.analyze(
                experiment,
                [analyzer],
                executor=executor,
                on_item=lambda _: first.append(time.perf_counter()) if not first else None,
            )
    return _figures(report.reduced[analyzer.name], timer, first[0] if first else None, rss)


def run_sdk_on_dask(url: str, token: str, experiment: str, variant: str) -> dict[str, Any]:
    """(a) with a Dask LocalCluster as the executor; the cluster's start is not timed, its
    worker processes' memory is counted."""
    import distributed

    workers = os.cpu_count() or 2
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        return anyio.run(run_sdk, url, token, experiment, variant, client.get_executor())


# --- (b) AnalyzeManager style ------------------------------------------------------------------


def _baseline_item(args: tuple[str, str, str, str]) -> tuple[float, int]:
    """One item as an AnalyzeManager worker handles it: listing, whole files, then map."""
    url, token, sim_id, variant = args
    analyzer = VARIANTS[variant]()
    headers = {"X-COMPS-Token": token, "Accept": "application/json"}
    listing = httpx.get(
        f"{url}/asset/Simulations/{sim_id}/Output?flatten=1", headers=headers, timeout=None
    ).json()["Resources"]
    data: dict[str, Any] = {}
    for resource in listing:
        path = f"{resource['PathFromRoot']}/{resource['FriendlyName']}"
        if path in analyzer.filenames:
            body = httpx.get(resource["Url"], headers=headers, timeout=None).content
            data[path] = json.loads(body) if path.endswith(".json") else body
    return analyzer.map(data, None)


def run_baseline(
    url: str, token: str, experiment: str, variant: str, workers: int
) -> dict[str, Any]:
    first: float | None = None
    with TreeRss() as rss, Timer() as timer:
        sims = httpx.get(
            f"{url}/api/Simulations",
            headers={"X-COMPS-Token": token},
            params={"filters": f"ExperimentId={experiment}", "fields": "Id"},
            timeout=None,
        ).json()["Simulations"]
        results: dict[UUID, Any] = {}
        with ProcessPoolExecutor(workers) as pool:
            futures = {
                pool.submit(_baseline_item, (url, token, s["Id"], variant)): UUID(s["Id"])
                for s in sims
            }
            for future in as_completed(futures):
                first = first or time.perf_counter()
                results[futures[future]] = future.result()  # buffered until the end
        reduced = VARIANTS[variant]().reduce(results, [])
    return _figures(reduced, timer, first, rss)


def _figures(
    reduced: dict[str, Any], timer: Timer, first: float | None, rss: TreeRss
) -> dict[str, Any]:
    return {
        "seconds": round(timer.seconds, 2),
        "items_per_s": round(reduced["items"] / timer.seconds, 1),
        "first_result_s": round(first - timer.start, 2) if first else None,
        "peak_rss_MB_all_processes": rss.peak_mb,
        "reduced": reduced,
    }


def child(approach: str, variant: str, params: dict[str, str]) -> None:
    url, token, experiment = params["url"], params["token"], params["experiment"]
    if approach == "comps_async":
        figures = anyio.run(run_sdk, url, token, experiment, variant)
    elif approach == "comps_async_dask":
        figures = run_sdk_on_dask(url, token, experiment, variant)
    else:
        workers = int(approach.rsplit("_", 1)[1])
        figures = run_baseline(url, token, experiment, variant, workers)
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--child", nargs=3, metavar=("APPROACH", "VARIANT", "PARAMS_FILE"))
    parser.add_argument("--dask", action="store_true", help="add a Dask LocalCluster executor")
    add_profile_argument(parser)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], json.loads(Path(args.child[2]).read_text()))
        return
    cpus = os.cpu_count() or 2
    approaches = ["comps_async", f"analyzemanager_{cpus}", "analyzemanager_24"]
    if args.dask:
        approaches.insert(1, "comps_async_dask")
    with server_process() as server:
        started = time.perf_counter()
        experiment = anyio.run(prepare, server.url, server.token, args.sims)
        setup_s = time.perf_counter() - started
        params = Path(server.data_dir) / "bench-params.json"
        params.write_text(
            json.dumps({"url": server.url, "token": server.token, "experiment": experiment})
        )
        figures: dict[str, Any] = {}
        for profile in chosen_profiles(args):
            apply_profile(server.url, server.token, profile, loopback_latency_s=LATENCY_S)
            for variant in VARIANTS:
                results: dict[str, Any] = {}
                for approach in approaches:
                    results[approach] = run_child(__file__, approach, variant, str(params))
                figures.setdefault(profile, {})[variant] = {
                    **results,
                    **_ratios(results, f"analyzemanager_{cpus}"),
                }
    report(
        "analyze",
        {
            "simulations": args.sims,
            "setup_seconds": round(setup_s, 1),
            "loopback_latency_ms_per_request": LATENCY_S * 1000,
            **figures,
        },
    )


def _ratios(results: dict[str, Any], cpu_pool: str) -> dict[str, float]:
    ours = results["comps_async"]
    if any(r["reduced"] != ours["reduced"] for r in results.values()):
        raise RuntimeError(f"the approaches disagree: {results}")
    ratios = {}
    if "comps_async_dask" in results:
        dask = results["comps_async_dask"]
        ratios["dask_seconds_vs_threads"] = round(dask["seconds"] / ours["seconds"], 2)
    for pool, label in ((cpu_pool, "cpu_count_pool"), ("analyzemanager_24", "24_pool")):
        ratios[f"speedup_vs_{label}"] = round(results[pool]["seconds"] / ours["seconds"], 1)
        ratios[f"rss_fraction_of_{label}"] = round(
            ours["peak_rss_MB_all_processes"] / results[pool]["peak_rss_MB_all_processes"], 2
        )
    return ratios


if __name__ == "__main__":
    main()
