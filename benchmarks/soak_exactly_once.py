"""Exactly once, the hard way: a calibration loop under faults, with one server kill and one
client kill at random points; then count what the server's database holds.

    python benchmarks/soak_exactly_once.py                       # 10 iterations x 2,000
    python benchmarks/soak_exactly_once.py --iterations 2 --sims 60 --seed 1   # CI size

The server runs in its own process with 10% 503, 2% resets before and 1% resets after commit on
every /api request; the client is another process running the pattern the README recommends
(creates with keys derived from the iteration, ``save_all(key=...)``, wait, harvest, verify). The
server is SIGKILLed once when the database holds a random fraction of all simulations, and
restarted on the same data directory; the client is SIGKILLed once at another random fraction and
started again. Each simulation copies its own config.json to output/result.json, so "all results
harvested" is checked per simulation: the result must be the simulation's own input.
Prints one JSON document; exit status 1 if any figure is off.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

import comps_async as ca
from comps_async.local import FaultConfig, LocalCompsProcess

FAULTS = FaultConfig(
    error_503_rate=0.10,
    reset_before_rate=0.02,
    reset_after_rate=0.01,
    retry_after_s=0.05,
    routes=r"^(GET|POST|PUT) /api/",
)
# Each simulation proves it ran by copying its own input to its output.
RUN_COPY = ca.Configuration(
    environment_name="Local",
    executable_path="/bin/sh",
    simulation_input_args="-c 'mkdir -p output && cp config.json output/result.json'",
)


# --- the client: what a calibration user writes ----------------------------------------------


async def client(url: str, token: str, iterations: int, sims: int, out: Path) -> None:
    retry = ca.RetryPolicy(max_attempts=8)
    async with ca.Session(url, token=token, retry=retry, token_cache_dir=out) as s:
        for iteration in range(iterations):
            key = f"soak.iteration-{iteration}"
            experiment = await s.experiments.create(
                ca.Experiment(name=key, configuration=RUN_COPY), key=key
            )
            inputs = [{"iteration": iteration, "n": n} for n in range(sims)]
            simulations = [
                ca.Simulation(
                    name=f"i{iteration}-s{n}",
                    experiment_id=experiment.id,
                    files=[ca.SimulationFile.from_bytes("config.json", json.dumps(i).encode())],
                )
                for n, i in enumerate(inputs)
            ]
            await s.simulations.save_all(simulations, key=key, commission=True)
            await s.wait(simulation_ids=simulations, timeout=3600)
            expected = {sim.id: i for sim, i in zip(simulations, inputs, strict=True)}
            results: dict[Any, Any] = {}
            for _ in range(5):  # a harvest reports failures per simulation: fetch the rest
                todo = [sim for sim in simulations if sim.id not in results]
                async for got in s.outputs.harvest(todo, ["output/result.json"], out / key):
                    if got.ok and got.local_path is not None:
                        text = await anyio.Path(got.local_path).read_text()
                        results[got.simulation_id] = json.loads(text)
                if len(results) == sims:
                    break
            wrong = sum(results.get(sim_id) != value for sim_id, value in expected.items())
            print(json.dumps({"iteration": iteration, "results": len(results), "wrong": wrong}))
            if wrong:
                raise SystemExit(f"iteration {iteration}: {wrong} results missing or wrong")


# --- the orchestrator: faults, kills, and counting rows ----------------------------------------


def count(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows, keys = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT t.value) FROM entities e LEFT JOIN tags t "
            "ON t.entity_id = e.id AND t.key = ? WHERE e.kind = 'Simulation' AND e.deleted = 0",
            (ca.KEY_TAG,),
        ).fetchone()
        experiments = conn.execute(
            "SELECT COUNT(*) FROM entities WHERE kind = 'Experiment' AND deleted = 0"
        ).fetchone()[0]
        succeeded = conn.execute(
            "SELECT COUNT(*) FROM entities WHERE kind = 'Simulation' AND state = 'Succeeded'"
        ).fetchone()[0]
    finally:
        conn.close()
    return {"rows": rows, "keys": keys, "experiments": experiments, "succeeded": succeeded}


def soak(iterations: int, sims: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    total = iterations * sims
    kill_server_at = int(total * rng.uniform(0.1, 0.9))
    kill_client_at = int(total * rng.uniform(0.1, 0.9))
    with tempfile.TemporaryDirectory(prefix="comps-soak-") as tmp:
        work = Path(tmp)
        server = LocalCompsProcess(work / "data", faults=FAULTS).start()
        command = [sys.executable, __file__, "--client", server.url, server.token]
        command += ["--iterations", str(iterations), "--sims", str(sims), "--out", str(work)]
        lines: list[str] = []
        started = time.perf_counter()
        client_runs = 0
        server_killed = client_killed = False
        try:
            while True:
                client_runs += 1
                process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                while process.poll() is None:
                    rows = count(server.data_dir / "comps.sqlite3")["rows"]
                    if not server_killed and rows >= kill_server_at:
                        server.kill()
                        server.start()  # same data directory and port; faults again
                        server_killed = True
                    if not client_killed and rows >= kill_client_at:
                        process.kill()
                        client_killed = True
                    time.sleep(0.05)  # polling the database of another process
                assert process.stdout is not None
                lines += process.stdout.read().splitlines()
                if process.returncode == 0:
                    break
                if client_runs > 10:
                    raise RuntimeError("the client kept failing")
        finally:
            server.stop()
        seconds = time.perf_counter() - started
        figures = count(server.data_dir / "comps.sqlite3")
    reports = [json.loads(line) for line in lines if line.startswith("{")]
    last = {r["iteration"]: r for r in reports}  # a re-run reports an iteration again
    harvested = sum(r["results"] - r["wrong"] for r in last.values())
    return {
        "iterations": iterations,
        "simulations_per_iteration": sims,
        "expected_rows": total,
        "rows": figures["rows"],
        "duplicates": figures["rows"] - figures["keys"],
        "experiments": figures["experiments"],
        "succeeded": figures["succeeded"],
        "results_harvested_and_verified": harvested,
        "client_runs": client_runs,
        "server_killed_at_rows": kill_server_at,
        "client_killed_at_rows": kill_client_at,
        "seconds": round(seconds, 1),
        "faults": {
            "503": FAULTS.error_503_rate,
            "reset_before": FAULTS.reset_before_rate,
            "reset_after": FAULTS.reset_after_rate,
        },
        "ok": figures["rows"] == figures["keys"] == total
        and figures["experiments"] == iterations
        and harvested == total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--sims", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--client", nargs=2, metavar=("URL", "TOKEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        anyio.run(client, *args.client, args.iterations, args.sims, args.out)
        return
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    result = soak(args.iterations, args.sims, seed)
    print(json.dumps({"benchmark": "soak_exactly_once", "seed": seed, **result}, indent=2))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
