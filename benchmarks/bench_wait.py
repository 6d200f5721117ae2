"""Waiting benchmark (issue 8): bytes and requests spent waiting for an experiment of 10,000
simulations, comps_async ``s.wait`` against idmtools-style polling (every 5 s, re-fetch every
simulation's id and state). Both watch the same experiment, at the same time, from start to
finish, against the local server (own process); the simulations run ``/bin/true``.

    python benchmarks/bench_wait.py [--sims 10000]
"""

from __future__ import annotations

import argparse

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

BASELINE_INTERVAL_S = 5.0


class Meter:
    """A policy that counts requests and response body bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    async def send(self, request: httpx.Request, call_next: ca.CallNext) -> httpx.Response:
        response = await call_next(request)
        self.requests += 1
        self.bytes += len(response.content) + sum(len(k) + len(v) for k, v in response.headers.raw)
        return response


async def run(url: str, token: str, sims: int) -> dict[str, object]:
    async with ca.Session(url, token=token) as s:
        experiment = await s.experiments.create(
            ca.Experiment(
                name="wait-bench",
                configuration=ca.Configuration(
                    environment_name="Local", executable_path="/bin/true"
                ),
            )
        )
        await s.simulations.save_all(
            [ca.Simulation(name=f"w{i}", experiment_id=experiment.id) for i in range(sims)],
            concurrency=4,
        )
    ours, theirs = Meter(), Meter()
    done = anyio.Event()
    async with (
        ca.Session(url, token=token, policies=[ours]) as watcher,
        ca.Session(url, token=token, policies=[theirs]) as poller,
    ):

        async def baseline() -> None:
            query = ca.Query().select(["id", "state"]).where([f"experiment_id={experiment.id}"])
            while True:
                states = [sim.state async for sim in poller.simulations.iterate(query)]
                if all(str(state) in ("Succeeded", "Failed", "Canceled") for state in states):
                    done.set()
                    return
                await anyio.sleep(BASELINE_INTERVAL_S)

        with Timer() as timer:
            async with anyio.create_task_group() as tg:
                tg.start_soon(baseline)
                await watcher.experiments.commission(experiment)
                final = await watcher.wait(experiment_id=experiment, timeout=3600)
                await done.wait()
    return {
        "simulations": sims,
        "seconds": round(timer.seconds, 1),
        "succeeded": final.succeeded,
        "comps_async": {"requests": ours.requests, "bytes": ours.bytes},
        "idmtools_style_5s_refetch": {"requests": theirs.requests, "bytes": theirs.bytes},
        "bytes_fraction": round(ours.bytes / theirs.bytes, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sims", type=int, default=10_000)
    add_profile_argument(parser)
    args = parser.parse_args()
    figures = {}
    for profile in chosen_profiles(args):
        with server_process() as server:
            apply_profile(server.url, server.token, profile)
            figures[profile] = anyio.run(run, server.url, server.token, args.sims)
    report("waiting", figures)


if __name__ == "__main__":
    main()
