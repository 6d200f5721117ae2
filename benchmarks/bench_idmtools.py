"""idmtools on both platform types (issue 25): the same script with ``type = COMPS`` (stock,
over pyCOMPS) and ``type = COMPS_ASYNC``, against the local server in its own process, at the
loopback and WAN profiles, side by side.

The script: an experiment of SIMS ``JSONConfiguredPythonTask`` simulations, each writing a JSON
result and a ~30 KB CSV trace.

- creation: ``experiment.run()`` until it returns — every simulation exists and is
  commissioned (checked in the server's database);
- waiting: ``experiment.wait()`` while the simulations run — requests and response bytes the
  server sent (its own per-route counters), wall time;
- analysis: ``AnalyzeManager`` with a two-file analyzer (idmtools parses the JSON and the CSV)
  — wall time and the peak RSS of the whole process tree (the stock pool's workers included).

Each platform type runs in a process of its own (so RSS and imports are its own).

    python benchmarks/bench_idmtools.py [--sims 2000] [--profile loopback|wan|both]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from idmtools.analysis.analyze_manager import AnalyzeManager
from idmtools.builders import SimulationBuilder
from idmtools.core import ItemType
from idmtools.core.platform_factory import Platform
from idmtools.entities.experiment import Experiment
from idmtools.entities.ianalyzer import IAnalyzer
from idmtools.entities.templated_simulation import TemplatedSimulations
from idmtools_models.python.json_python_task import JSONConfiguredPythonTask

from common import (
    Timer,
    TreeRss,
    add_profile_argument,
    apply_profile,
    chosen_profiles,
    report,
    server_process,
)

USER, PASSWORD = "bench", "bench-Secret-1"
MODEL = """import argparse, json, os
parser = argparse.ArgumentParser()
parser.add_argument("--config")
beta = json.load(open(parser.parse_args().config))["beta"]
os.makedirs("output", exist_ok=True)
json.dump({"beta": beta, "score": -abs(beta - 0.3)}, open("output/result.json", "w"))
with open("output/trace.csv", "w") as out:
    out.write("step,infected\\n")
    out.writelines(f"{t},{beta * t:.6f}\\n" for t in range(1500))
"""
TYPES = {"stock": "COMPS", "comps_async": "COMPS_ASYNC"}


# --- the child: one platform type ------------------------------------------------------------


class TwoFiles(IAnalyzer):
    """Reads the JSON result and the CSV trace (idmtools parses both: a dict and a DataFrame)."""

    def __init__(self) -> None:
        super().__init__(filenames=["output/result.json", "output/trace.csv"], parse=True)

    def map(self, data: dict[str, Any], item: Any) -> tuple[float, int]:
        return data["output/result.json"]["score"], len(data["output/trace.csv"])

    def reduce(self, all_data: dict[Any, tuple[float, int]]) -> dict[str, Any]:
        return {"items": len(all_data), "rows": sum(r[1] for r in all_data.values())}


def child(block: str, sims: int, url: str, token: str) -> dict[str, Any]:
    """Create, wait, analyse on ``block``; returns the figures."""

    def server_counts() -> dict[str, Any]:
        got = httpx.get(f"{url}/api/_local/counters", headers={"X-COMPS-Token": token}).json()
        return {"requests": got["Counters"], "bytes": got["BytesSent"]}

    platform = Platform(block)
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model.py"
        model.write_text(MODEL)
        task = JSONConfiguredPythonTask(script_path=str(model), parameters={"beta": 0.0})
        builder = SimulationBuilder()
        builder.add_sweep_definition(
            lambda simulation, beta: simulation.task.set_parameter("beta", beta),
            [round(i / sims, 6) for i in range(sims)],
        )
        templated = TemplatedSimulations(base_task=task)
        templated.add_builder(builder)
        experiment = Experiment.from_template(templated, name=f"bench {block}")
        with Timer() as creation:
            experiment.run(wait_until_done=False)
        before = server_counts()
        with Timer() as waiting:
            experiment.wait(refresh_interval=5)
        after = server_counts()
        analyzer = TwoFiles()
        manager = AnalyzeManager(
            platform=platform,
            ids=[(experiment.uid, ItemType.EXPERIMENT)],
            analyzers=[analyzer],
            verbose=False,
        )
        with TreeRss() as rss, Timer() as analysis:
            manager.analyze()
    wait_requests = _delta(before["requests"], after["requests"])
    wait_bytes = _delta(before["bytes"], after["bytes"])
    return {
        "experiment": str(experiment.uid),
        "succeeded": experiment.succeeded,
        "creation_s": round(creation.seconds, 2),
        "wait_s": round(waiting.seconds, 2),
        "wait_requests": sum(wait_requests.values()),
        "wait_bytes": sum(wait_bytes.values()),
        "analysis_s": round(analysis.seconds, 2),
        "analysis_peak_rss_MB_all_processes": rss.peak_mb,
        "analyzed": analyzer.results["items"],
        "analysis_processes": manager.max_processes,
    }


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: v - before.get(k, 0)
        for k, v in after.items()
        if not k.endswith("/_local/counters") and v != before.get(k, 0)
    }


# --- the parent --------------------------------------------------------------------------------


def run_type(cwd: Path, env: dict[str, str], block: str, sims: int, url: str, token: str) -> Any:
    args = [sys.executable, __file__, "--child", block, str(sims), url, token]
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=7200)
    if out.returncode:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_created(data_dir: Path, experiment: str, sims: int) -> None:
    db = sqlite3.connect(f"file:{data_dir / 'comps.sqlite3'}?mode=ro", uri=True)
    try:
        ((count,),) = db.execute(
            "SELECT COUNT(*) FROM entities WHERE parent_id = ? AND deleted = 0", (experiment,)
        ).fetchall()
    finally:
        db.close()
    if count != sims:
        raise RuntimeError(f"{experiment} holds {count} simulations, not {sims}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=2000)
    add_profile_argument(parser)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as scratch,
        server_process("--user", f"{USER}:{PASSWORD}") as server,
    ):
        cwd, runtime = Path(scratch) / "cwd", Path(scratch) / "runtime"
        cwd.mkdir()
        runtime.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPS_")}
        env |= {"XDG_RUNTIME_DIR": str(runtime), "IDMTOOLS_DISABLE_PROGRESS_BAR": "1"}
        (cwd / "idmtools.ini").write_text(
            "[COMMON]\nmax_workers = 24\n"  # idmtools' COMPS default for AnalyzeManager
            + "".join(
                f"[{kind}]\ntype = {kind}\nendpoint = {server.url}\nenvironment = Local\n"
                for kind in TYPES.values()
            )
        )
        subprocess.run(
            [sys.executable, "-m", "comps_async.cli", "login", "-s", server.url, "-u", USER],
            env=env | {"COMPS_PASSWORD": PASSWORD},
            check=True,
            capture_output=True,
        )
        for profile in chosen_profiles(args):
            apply_profile(server.url, server.token, profile)
            figures = {}
            for label, kind in TYPES.items():
                got = run_type(cwd, env, kind, args.sims, server.url, server.token)
                check_created(server.data_dir, got["experiment"], args.sims)
                figures[label] = got
            stock, fast = figures["stock"], figures["comps_async"]
            figures["ratios"] = {
                "creation_speedup": round(stock["creation_s"] / fast["creation_s"], 1),
                "analysis_speedup": round(stock["analysis_s"] / fast["analysis_s"], 1),
                "analysis_rss_fraction": round(
                    fast["analysis_peak_rss_MB_all_processes"]
                    / stock["analysis_peak_rss_MB_all_processes"],
                    2,
                ),
                "wait_bytes_fraction": round(fast["wait_bytes"] / max(stock["wait_bytes"], 1), 4),
            }
            results[profile] = figures
    report("idmtools", {"sims": args.sims, **results})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        block, sims, url, token = sys.argv[2:6]
        print(json.dumps(child(block, int(sims), url, token)))
    else:
        main()
