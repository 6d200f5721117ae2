"""A million simulations (issue 26): cost per simulation and memory against N.

For each size, a fresh local server (own process) and a fresh client process:

- save: ``save_all`` of a *generator* of simulations sharing one config file (4 batches in
  flight), beside the floor — bare aiohttp POSTing the same batches at the same N in the same
  run; wall and client CPU per simulation, client RSS growth;
- iterate: every simulation back (Id, State), wall and client RSS growth;
- stats: one experiment's Stats at that size (ms, best of 5);
- server: peak RSS of the server process (VmHWM) over the whole run.

Per-simulation figures are compared with the 10k figure (``vs_10k``): constant cost means
ratios near 1.

    python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--million] [--chart out.png]
                                     [--profile loopback|wan]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
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
        return {"save": save, "iterate": iterate, "stats_ms": round(min(times) * 1e3, 1)}


async def bare_figures(url: str, token: str, count: int) -> dict[str, Any]:
    """The floor: bench_save's bare client (same batches, shared part once, 4 in flight)."""
    seconds, cpu = await run_bare_aiohttp(url, token, count)
    return {
        "seconds": round(seconds, 2),
        "wall_us_per_simulation": round(seconds / count * 1e6, 1),
        "cpu_us_per_simulation": round(cpu / count * 1e6, 1),
    }


def child(count: int, profile: str) -> None:
    """One size, in a process of its own (its RSS is its own), against a fresh server."""
    with server_process() as server:
        apply_profile(server.url, server.token, profile)
        figures = anyio.run(sdk_figures, server.url, server.token, count)
        figures["bare_aiohttp_floor"] = anyio.run(
            bare_figures, server.url, server.token, count, backend="asyncio"
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
    args = parser.parse_args()
    if args.child:
        child(args.child, args.profile)
        return
    sizes = [int(n) for n in args.sizes.split(",")] + ([1_000_000] if args.million else [])
    by_size = {str(n): run_child(sys.argv[0], str(n), "--profile", args.profile) for n in sizes}
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
    figures = {"profile": args.profile, "sizes": by_size}
    if args.chart:
        chart(figures, args.chart)
    report("scale", figures)


if __name__ == "__main__":
    main()
