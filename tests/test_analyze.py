"""``analyze``: idmtools-style analyzers over outputs as they land, against the local server."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import pytest

import comps_async as ca
from comps_async.local import LocalComps
from comps_async.sync import Session as SyncSession

from helpers import poll_until

pytestmark = pytest.mark.anyio

MODEL = (
    "-c \"import json, os; c = json.load(open('config.json')); os.makedirs('output', "
    "exist_ok=True); json.dump({'beta': c['beta'], 'peak': 1 - (c['beta'] - 0.3) ** 2}, "
    "open('output/result.json', 'w')); open('output/rows.csv', 'w').write('day,x\\n1,2\\n2,3\\n'); "
    "raise SystemExit(3 if c.get('fail') else 0)\""
)
BETAS = [0.1, 0.2, 0.3, 0.4, 0.5]
NONE: frozenset[float] = frozenset()


class BestBeta(ca.Analyzer):
    """The calibration question: which beta gave the highest peak."""

    filenames = ("output/result.json",)

    def map(self, data: dict[str, Any], item: Any) -> dict[str, float]:
        return {
            "beta": data["output/result.json"]["beta"],
            "peak": data["output/result.json"]["peak"],
        }

    def reduce(self, results: Mapping[UUID, Any], failures: Sequence[ca.AnalysisFailure]) -> Any:
        best = max(results.values(), key=lambda r: r["peak"])
        return {"best_beta": best["beta"], "mapped": len(results), "failed": len(failures)}


class RowCount(ca.Analyzer):
    """A second analyzer on the same pass: CSV parsed for it, result.json shared."""

    filenames = ("output/*.csv", "output/result.json")

    def map(self, data: dict[str, Any], item: Any) -> int:
        assert isinstance(data["output/result.json"], dict)
        return len(data["output/rows.csv"])

    def reduce(self, results: Mapping[UUID, Any], failures: Sequence[ca.AnalysisFailure]) -> Any:
        return sum(results.values())


class Picky(ca.Analyzer):
    """Raises on one beta; skips another by tag."""

    filenames = ("output/result.json",)

    def __init__(self) -> None:
        self.asked = 0

    def filter(self, item: Any) -> bool:
        self.asked += 1
        return (item.tags or {}).get("beta") != "0.5"

    def map(self, data: dict[str, Any], item: Any) -> float:
        if data["output/result.json"]["beta"] == 0.2:
            raise ValueError("this one is broken")
        return float(data["output/result.json"]["beta"])


async def _experiment(s: ca.Session, betas: list[float], fail: frozenset[float] = NONE) -> Any:
    exp = await s.experiments.create(
        ca.Experiment(
            name="analyze",
            configuration=ca.Configuration(
                environment_name="Local", executable_path="python3", simulation_input_args=MODEL
            ),
        )
    )
    await _add(s, exp, betas, fail)
    return exp


async def _add(s: ca.Session, exp: Any, betas: list[float], fail: frozenset[float] = NONE) -> None:
    sims = [
        ca.Simulation(
            name=f"beta {b}",
            experiment_id=exp.id,
            tags={"beta": str(b)},
            files=[
                ca.SimulationFile.from_bytes(
                    "config.json", json.dumps({"beta": b, "fail": b in fail}).encode()
                )
            ],
        )
        for b in betas
    ]
    await s.simulations.save_all(sims, commission=True)
    await s.wait(experiment_id=exp.id, timeout=60)


def downloads(server: LocalComps) -> int:
    return sum(n for k, n in server.faults.counters.items() if k.startswith("GET /asset/download"))


async def test_analyzers_share_one_pass_and_reduce(server: LocalComps, session: ca.Session) -> None:
    exp = await _experiment(session, BETAS)
    server.faults.counters.clear()
    report = await session.analyze(exp, [BestBeta(), RowCount()])
    assert report.reduced["BestBeta"] == {"best_beta": 0.3, "mapped": 5, "failed": 0}
    assert report.reduced["RowCount"] == 2 * len(BETAS)
    assert report.items == 5 and report.failures == []
    assert downloads(server) == 2 * len(BETAS)  # result.json once per item for both analyzers


async def test_failures_are_reported_and_never_stop_the_others(
    server: LocalComps, session: ca.Session
) -> None:
    exp = await _experiment(session, BETAS, fail=frozenset({0.4}))
    report = await session.analyze(exp, [BestBeta(), Picky()])
    assert report.reduced["BestBeta"] == {"best_beta": 0.3, "mapped": 4, "failed": 1}
    failed = {(f.analyzer, str(f.error)) for f in report.failures}
    assert ("Picky", "this one is broken") in failed  # which analyzer, which error
    assert any(a == "BestBeta" and "failed" in e for a, e in failed)  # the failed simulation
    server.faults.counters.clear()
    picky = Picky()
    items = [o async for o in session.analyze(exp, [picky])]
    assert picky.asked == 5  # its filter is asked once per item
    assert len(items) == 4  # beta 0.5 filtered out by its tag
    # Neither the filtered-out item nor the failed simulation costs a listing.
    assert server.faults.counters["GET /asset/Simulations/{id}/Output"] == 3
    assert sorted(o.result for o in items if o.ok) == [0.1, 0.3]
    with pytest.raises(ca.AnalysisFailedError, match=r"broken|failed"):
        await session.analyze(exp, [Picky()], fail_fast=True)
    with_failed = await session.analyze(exp, [BestBeta()], analyze_failed=True)
    assert with_failed.reduced["BestBeta"]["mapped"] == 5  # its outputs exist: analyzed too


async def test_a_rerun_maps_only_what_is_new(
    server: LocalComps, session: ca.Session, tmp_path: Path
) -> None:
    exp = await _experiment(session, BETAS[:3])
    cache = tmp_path / "cache"
    first = await session.analyze(exp, [BestBeta()], cache_dir=cache)
    assert first.cached == 0 and first.reduced["BestBeta"]["mapped"] == 3
    server.faults.counters.clear()
    again = await session.analyze(exp, [BestBeta()], cache_dir=cache)
    assert again.cached == 3 and downloads(server) == 0  # nothing fetched, nothing mapped
    assert again.reduced == first.reduced
    await _add(session, exp, [0.45])  # the experiment grows
    server.faults.counters.clear()
    grown = await session.analyze(exp, [BestBeta()], cache_dir=cache)
    assert grown.cached == 3 and downloads(server) == 1
    assert grown.reduced["BestBeta"]["mapped"] == 4


class Slow(ca.Analyzer):
    """Counts the maps running at once (threads)."""

    filenames = ("output/result.json",)
    lock = threading.Lock()
    running = 0
    most = 0

    def map(self, data: dict[str, Any], item: Any) -> None:
        with Slow.lock:
            Slow.running += 1
            Slow.most = max(Slow.most, Slow.running)
        threading.Event().wait(0.05)  # a CPU-heavy map, in a worker thread
        with Slow.lock:
            Slow.running -= 1


async def test_items_in_flight_are_bounded_by_the_window(session: ca.Session) -> None:
    exp = await _experiment(session, [b / 100 for b in range(12)])
    Slow.most = 0
    report = await session.analyze(exp, [Slow()], window=3)
    assert report.items == 12 and Slow.most <= 3 and Slow.most >= 2


async def test_leaving_an_analysis_block_early_stops_its_work(session: ca.Session) -> None:
    """``async with s.analyze(...) as outcomes``: a ``break`` leaves nothing running."""
    exp = await _experiment(session, BETAS)
    idle = {task.id for task in anyio.get_running_tasks()}
    async with session.analyze(exp, [BestBeta()], window=2) as outcomes:
        async for outcome in outcomes:
            assert outcome.ok
            break

    def left() -> list[str]:
        return [t.name for t in anyio.get_running_tasks() if t.id not in idle]

    # Nothing of the analysis runs on. Under trio a download's abandoned async generators
    # (httpx's stream inside httpcore's) are closed by trio's own short-lived tasks, which
    # may still be on their way out: those, and only those, are waited for.
    assert all(name.startswith("close asyncgen") for name in left()), left()
    await poll_until(lambda: not left(), 5, "the async generator closers to finish")
    assert await session.environments() == ["Local"]


async def test_a_process_pool_maps_them(session: ca.Session) -> None:
    exp = await _experiment(session, BETAS)
    with ProcessPoolExecutor(2) as pool:
        report = await session.analyze(exp, [BestBeta()], executor=pool)
    assert report.reduced["BestBeta"]["best_beta"] == 0.3


class WhereMapped(ca.Analyzer):
    """Which process mapped each item, and which one reduced."""

    filenames = ("output/result.json",)

    def map(self, data: dict[str, Any], item: Any) -> int:
        return os.getpid()

    def reduce(self, results: Mapping[UUID, Any], failures: Sequence[ca.AnalysisFailure]) -> Any:
        return os.getpid(), set(results.values())


async def test_a_dask_cluster_maps_them_and_the_caller_reduces(
    session: ca.Session, anyio_backend: str
) -> None:
    """Past one machine: a Dask ``distributed`` client is the executor. Map runs on the
    cluster's worker processes (analyzers travel by pickle), reduce in the caller."""
    if anyio_backend != "asyncio":
        pytest.skip("the cluster runs in its own processes: one backend is enough")
    distributed = pytest.importorskip("distributed")
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    exp = await _experiment(session, BETAS)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        workers = set(client.run(os.getpid).values())
        report = await session.analyze(
            exp, [BestBeta(), WhereMapped()], executor=client.get_executor()
        )
    reducer, mappers = report.reduced["WhereMapped"]
    assert reducer == os.getpid() and mappers and mappers <= workers
    assert report.reduced["BestBeta"]["best_beta"] == 0.3 and not report.failures


async def test_bad_input_is_refused_before_anything_is_sent(session: ca.Session) -> None:
    class NoFiles(ca.Analyzer):
        pass

    with pytest.raises(ValueError, match="names no filenames"):
        await session.analyze(UUID(int=1), [NoFiles()])
    with pytest.raises(ValueError, match="distinct names"):
        await session.analyze(UUID(int=1), [BestBeta(), BestBeta()])
    with pytest.raises(TypeError, match="not an Analyzer"):
        await session.analyze(UUID(int=1), [object()])  # type: ignore[list-item]


def test_the_sync_session_analyzes_too(comps_server: LocalComps) -> None:
    with SyncSession(comps_server.url, token=comps_server.token) as s:
        exp = s.experiments.create(
            ca.Experiment(
                name="sync-analyze",
                configuration=ca.Configuration(
                    environment_name="Local", executable_path="python3", simulation_input_args=MODEL
                ),
            )
        )
        sims = [
            ca.Simulation(
                name=f"b{b}",
                experiment_id=exp.id,
                files=[
                    ca.SimulationFile.from_bytes("config.json", json.dumps({"beta": b}).encode())
                ],
            )
            for b in BETAS
        ]
        s.simulations.save_all(sims, commission=True)
        s.wait(experiment_id=exp.id, timeout=60)
        assert s.analyze(exp, [BestBeta()]).report().reduced["BestBeta"]["best_beta"] == 0.3
        assert len(list(s.analyze(exp, [BestBeta()]))) == 5
