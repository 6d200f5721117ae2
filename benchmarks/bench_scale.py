"""A million simulations (issue 26): cost per simulation and memory against N.

For each size, a fresh local server (own process) and a fresh client process:

- save: ``save_all`` of a *generator* of simulations sharing one config file (4 batches in
  flight), beside the floor — bare aiohttp POSTing the same batches at the same N in the same
  run; wall and client CPU per simulation, client RSS growth;
- iterate: every simulation back (Id, State), wall and client RSS growth;
- stats: one experiment's Stats at that size (ms, best of 5);
- harvest (up to 100k): every simulation's ``output/result.json`` (2 KB) to disk, md5-verified,
  given only the experiment, beside the floor — raw aiohttp doing the same listing + GETs
  (bench_harvest's ``floor_listing``); wall, client CPU per simulation and client RSS growth.
  Running 100k processes would take the runner an hour on 2 cores, so the simulations are made
  finished by writing the server's database the way its runner does (one working directory,
  shared, one HPC job each): the harvest itself goes over HTTP like any other;
- analyze (up to 100k): ``async for`` over an analysis of the same results (one trivial map per
  simulation, in worker threads); wall, client CPU and RSS growth;
- server: peak RSS of the server process (VmHWM) over the whole run.

Per-simulation figures are compared with the 10k figure (``vs_10k``): constant cost means
ratios near 1.

    python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--million] [--chart out.png]
                                     [--profile loopback|wan]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from bench_harvest import run_floor_listing
from bench_save import CONFIG, run_bare_aiohttp

import comps_async as ca

from common import PROFILES, Timer, apply_profile, report, run_child, server_process

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


class PeakRss:
    """Peak RSS of this process while the block runs, sampled at 20 Hz."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb())

    @property
    def growth_mb(self) -> float:
        return round(self.peak - self.base, 1)


def server_peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def sdk_figures(url: str, token: str, count: int) -> dict[str, Any]:
    async with ca.Session(url, token=token) as s:
        exp = await s.experiments.create(ca.Experiment(name=f"scale-{count}"))
        config = ca.SimulationFile.from_bytes("config.json", CONFIG)

        def generate() -> Iterator[ca.Simulation]:
            for i in range(count):
                yield ca.Simulation(
                    name=f"s{i}", experiment_id=exp.id, tags={"i": i}, files=[config]
                )

        cpu = time.process_time()
        with PeakRss() as memory, Timer() as timer:
            saved = await s.simulations.save_all(generate(), concurrency=4)
        cpu = time.process_time() - cpu
        assert saved == count
        save = {
            "seconds": round(timer.seconds, 2),
            "wall_us_per_simulation": round(timer.seconds / count * 1e6, 1),
            "cpu_us_per_simulation": round(cpu / count * 1e6, 1),
            "client_rss_growth_mb": memory.growth_mb,
        }
        query = ca.Query().select(["id", "state"]).where([f"experiment_id={exp.id}"])
        with PeakRss() as memory, Timer() as timer:
            seen = sum([1 async for _ in s.simulations.iterate(query)])
        assert seen == count
        iterate = {
            "seconds": round(timer.seconds, 2),
            "client_rss_growth_mb": memory.growth_mb,
        }
        times = []
        for _ in range(5):
            with Timer() as timer:
                await s.experiments.stats(exp)
            times.append(timer.seconds)
        return {
            "experiment_id": str(exp.id),
            "save": save,
            "iterate": iterate,
            "stats_ms": round(min(times) * 1e3, 1),
        }


HARVEST_MAX = 100_000  # the harvest is measured up to this size
RESULT = json.dumps({"draws": os.urandom(1000).hex()}).encode()  # output/result.json, 2 KB


class ResultSize(ca.Analyzer):
    """The cheapest analysis: each result's size (the cost measured is the SDK's)."""

    filenames = ("output/result.json",)

    def map(self, data: dict[str, Any], item: Any) -> int:
        return len(data["output/result.json"]["draws"])

    def reduce(self, results: Any, failures: Any) -> int:
        return sum(results.values())


def finish_with_outputs(data_dir: Path, experiment_id: str) -> None:
    """Mark an experiment's simulations Succeeded with one output each, as the runner would
    (an HPC job whose working directory holds ``output/result.json``, its md5 indexed)."""
    workdir = data_dir / "work" / "shared"
    (workdir / "output").mkdir(parents=True, exist_ok=True)
    (workdir / "output" / "result.json").write_bytes(RESULT)
    md5 = hashlib.md5(RESULT).hexdigest()
    with sqlite3.connect(data_dir / "comps.sqlite3", timeout=60) as db:
        sims = [
            r[0]
            for r in db.execute(
                "SELECT id FROM entities WHERE kind = 'Simulation' AND parent_id = ?",
                (experiment_id,),
            )
        ]
        jobs = [(str(uuid.uuid4()), sim) for sim in sims]
        db.executemany(
            "INSERT INTO hpc_jobs (id, entity_id, doc) VALUES (?, ?, ?)",
            [
                (
                    job,
                    sim,
                    json.dumps(
                        {"Id": job, "JobState": "Finished", "WorkingDirectory": str(workdir)}
                    ),
                )
                for job, sim in jobs
            ],
        )
        db.executemany(
            "INSERT INTO outputs VALUES (?, 'output/result.json', ?, ?)",
            [(job, len(RESULT), md5) for job, _ in jobs],
        )
        db.execute(
            "UPDATE entities SET state = 'Succeeded' WHERE kind = 'Simulation' AND parent_id = ?",
            (experiment_id,),
        )


async def harvest_figures(url: str, token: str, experiment_id: str, count: int) -> dict[str, Any]:
    """The SDK's harvest of every simulation's result, to disk, md5-verified."""
    dest = Path(tempfile.mkdtemp(prefix="scale-harvest-"))
    try:
        async with ca.Session(url, token=token) as s:
            files = 0
            cpu = time.process_time()
            with PeakRss() as memory, Timer() as timer:
                async with s.outputs.harvest(
                    experiment_id, ["output/result.json"], dest, concurrency=64
                ) as results:
                    async for got in results:
                        if not got.ok:
                            raise RuntimeError(f"harvest failed: {got.error}")
                        files += 1
            cpu = time.process_time() - cpu
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    assert files == count, files
    return _per_simulation(count, timer.seconds, cpu, memory, "files_per_s")


async def analyze_figures(url: str, token: str, experiment_id: str, count: int) -> dict[str, Any]:
    """``async for`` over an analysis of every simulation (outcomes streamed, nothing kept)."""
    async with ca.Session(url, token=token) as s:
        mapped = 0
        cpu = time.process_time()
        with PeakRss() as memory, Timer() as timer:
            async for outcome in s.analyze(experiment_id, [ResultSize()], window=64):
                if not outcome.ok:
                    raise RuntimeError(f"analysis failed: {outcome.error}")
                mapped += 1
        cpu = time.process_time() - cpu
    assert mapped == count, mapped
    return _per_simulation(count, timer.seconds, cpu, memory, "items_per_s")


def _per_simulation(
    count: int, seconds: float, cpu: float, memory: PeakRss, rate: str
) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 2),
        rate: round(count / seconds, 1),
        "cpu_us_per_simulation": round(cpu / count * 1e6, 1),
        "client_rss_growth_mb": memory.growth_mb,
    }


async def harvest_floor(url: str, token: str, experiment_id: str, count: int) -> dict[str, Any]:
    cpu = time.process_time()
    figures = await run_floor_listing(
        url, token, {"many": experiment_id}, Path(), "many", ["output/result.json"]
    )
    cpu = time.process_time() - cpu
    assert figures["files"] == count, figures
    return {
        "seconds": figures["seconds"],
        "files_per_s": figures["files_per_s"],
        "cpu_us_per_simulation": round(cpu / count * 1e6, 1),
    }


async def bare_figures(url: str, token: str, count: int) -> dict[str, Any]:
    """The floor: bench_save's bare client (same batches, shared part once, 4 in flight)."""
    seconds, cpu = await run_bare_aiohttp(url, token, count)
    return {
        "seconds": round(seconds, 2),
        "wall_us_per_simulation": round(seconds / count * 1e6, 1),
        "cpu_us_per_simulation": round(cpu / count * 1e6, 1),
    }


def child(count: int, profile: str, harvest: bool = True) -> None:
    """One size, in a process of its own (its RSS is its own), against a fresh server."""
    with server_process() as server:
        apply_profile(server.url, server.token, profile)
        figures = anyio.run(sdk_figures, server.url, server.token, count)
        figures["bare_aiohttp_floor"] = anyio.run(
            bare_figures, server.url, server.token, count, backend="asyncio"
        )
        if harvest and count <= HARVEST_MAX:
            experiment = figures["experiment_id"]
            finish_with_outputs(Path(server.data_dir), experiment)
            sdk = anyio.run(harvest_figures, server.url, server.token, experiment, count)
            floor = anyio.run(
                harvest_floor, server.url, server.token, experiment, count, backend="asyncio"
            )
            figures["harvest"] = {
                "sdk": sdk,
                "raw_aiohttp_listing_floor": floor,
                "fraction_of_floor": round(sdk["files_per_s"] / floor["files_per_s"], 2),
            }
            figures["analyze"] = anyio.run(
                analyze_figures, server.url, server.token, experiment, count
            )
        assert server._process is not None
        figures["server_peak_rss_mb"] = server_peak_mb(server._process.pid)
    print(json.dumps(figures))


def chart(figures: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(n) for n in figures["sizes"]]
    rows = [figures["sizes"][str(n)] for n in sizes]
    fig, (cost, memory) = plt.subplots(1, 2, figsize=(10, 4))
    cost.plot(sizes, [r["save"]["cpu_us_per_simulation"] for r in rows], "o-", label="SDK CPU")
    cost.plot(sizes, [r["save"]["wall_us_per_simulation"] for r in rows], "o-", label="SDK wall")
    cost.plot(
        sizes,
        [r["bare_aiohttp_floor"]["wall_us_per_simulation"] for r in rows],
        "o--",
        label="bare wall",
    )
    cost.set(xscale="log", xlabel="simulations", ylabel="µs per simulation", ylim=(0, None))
    cost.legend()
    memory.plot(sizes, [r["save"]["client_rss_growth_mb"] for r in rows], "o-", label="client")
    memory.plot(sizes, [r["server_peak_rss_mb"] for r in rows], "o-", label="server peak")
    memory.set(xscale="log", xlabel="simulations", ylabel="MB", ylim=(0, None))
    memory.legend()
    fig.suptitle("save_all of a generator: cost per simulation and memory against N")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=int)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--million", action="store_true", help="add 1,000,000 (long)")
    parser.add_argument("--chart", help="write a PNG chart here (needs matplotlib)")
    parser.add_argument("--profile", choices=PROFILES, default="loopback")
    parser.add_argument("--no-harvest", action="store_true", help="save, iterate, stats only")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.profile, harvest=not args.no_harvest)
        return
    sizes = [int(n) for n in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    extra = ["--no-harvest"] if args.no_harvest else []
    by_size = {
        str(n): run_child(sys.argv[0], str(n), "--profile", args.profile, *extra) for n in sizes
    }
    reference = by_size.get("10000")
    if reference is not None:
        for row in by_size.values():
            row["vs_10k"] = {
                what: round(row["save"][what] / reference["save"][what], 2)
                for what in ("cpu_us_per_simulation", "wall_us_per_simulation")
            }
            row["vs_10k"]["wall_vs_bare"] = round(
                row["save"]["seconds"] / row["bare_aiohttp_floor"]["seconds"], 2
            )
            if "harvest" in row and "harvest" in reference:
                row["vs_10k"]["harvest_cpu_us_per_simulation"] = round(
                    row["harvest"]["sdk"]["cpu_us_per_simulation"]
                    / reference["harvest"]["sdk"]["cpu_us_per_simulation"],
                    2,
                )
    figures = {"profile": args.profile, "sizes": by_size}
    if args.chart:
        chart(figures, args.chart)
    report("scale", figures)


if __name__ == "__main__":
    main()
