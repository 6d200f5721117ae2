"""Exactly once across cancellations, lost answers, dead servers and re-started processes.

Every test counts what the server's database holds (``rows_by_key``), never what the SDK says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import anyio
import anyio.lowlevel
import httpx
import pytest

import comps_async as ca
from comps_async.local import FaultConfig, LocalComps, LocalCompsProcess

from helpers import CONFIG, poll_until, rows_by_key

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parents[1] / "examples" / "calibration_loop.py"
# Quick retries: these tests exhaust attempts on purpose.
FAST_RETRY = ca.RetryPolicy(max_attempts=2, backoff_base_s=0.005, backoff_max_s=0.01)
# ... and give up on a batch after 3 attempts (each preceded by a look-up).
FAST_BATCHES = ca.RetryPolicy(
    max_attempts=2, backoff_base_s=0.005, backoff_max_s=0.01, create_attempts=3
)


def make_sims(experiment: ca.Experiment, count: int) -> list[ca.Simulation]:
    shared = ca.SimulationFile.from_bytes("config.json", CONFIG)
    return [
        ca.Simulation(name=f"s{i}", experiment_id=experiment.id, tags={"i": i}, files=[shared])
        for i in range(count)
    ]


async def ids_on_server(s: ca.Session, experiment: ca.Experiment) -> set[UUID | None]:
    query = ca.Query().select(["id"]).where([f"experiment_id={experiment.id}"])
    return {sim.id async for sim in s.simulations.iterate(query)}


class CancelAfterCommit:
    """A policy that cancels ``scope`` right after the ``nth`` batch POST was answered, so that
    the server has committed a batch whose ids the caller never sees (Ctrl-C, ``fail_after``,
    a cancelled request handler)."""

    def __init__(self, nth: int) -> None:
        self.nth = nth
        self.posts = 0
        self.scope: anyio.CancelScope | None = None

    async def send(self, request: httpx.Request, call_next: ca.CallNext) -> httpx.Response:
        response = await call_next(request)
        if request.method == "POST" and request.url.path == "/api/Simulations":
            self.posts += 1
            if self.posts == self.nth and self.scope is not None:
                self.scope.cancel()
                await anyio.lowlevel.checkpoint()  # the answer is lost here
        return response


async def test_a_cancelled_save_all_run_again_creates_each_once(tmp_path: Path) -> None:
    canceller = CancelAfterCommit(nth=3)
    faults = FaultConfig(latency_s=0.02, routes="POST /api/Simulations")  # batches overlap
    async with (
        LocalComps(tmp_path / "server", faults=faults) as server,
        ca.Session(
            server.url, token=server.token, token_cache_dir=tmp_path, policies=[canceller]
        ) as s,
    ):
        experiment = await s.experiments.create(ca.Experiment(name="cancelled"))
        sims = make_sims(experiment, 1000)
        with anyio.CancelScope() as scope:
            canceller.scope = scope
            await s.simulations.save_all(sims, concurrency=4)
        assert scope.cancelled_caught
        rows, _ = rows_by_key(server.data_dir)
        known = sum(sim.id is not None for sim in sims)
        assert rows >= known + 100  # the third batch landed but its answer was lost
        assert await s.simulations.save_all(sims) == 1000  # the same call again
        assert rows_by_key(server.data_dir) == (1000, 1000)
        assert await ids_on_server(s, experiment) == {sim.id for sim in sims}


async def test_answers_lost_on_every_post_and_every_lookup(tmp_path: Path) -> None:
    lose_all = FaultConfig(reset_after_rate=1.0, routes=r"/api/Simulations$")
    async with (
        LocalComps(tmp_path / "server") as server,
        ca.Session(
            server.url, token=server.token, token_cache_dir=tmp_path, retry=FAST_BATCHES
        ) as s,
    ):
        experiment = await s.experiments.create(ca.Experiment(name="lossy"))
        sims = make_sims(experiment, 150)
        server.faults.configure(lose_all)
        with pytest.raises(ca.BatchSaveError) as caught:
            await s.simulations.save_all(sims)
        error = caught.value
        # The truth: every batch committed, and the SDK could not learn it, so nothing is
        # reported as failed (which would invite a duplicating retry); all are unknown.
        assert error.failed == [] and error.saved == []
        assert len(error.unknown) == 150 and len(set(error.unknown_keys)) == 150
        assert rows_by_key(server.data_dir) == (150, 150)  # each POST committed once
        server.faults.configure(FaultConfig())
        assert await s.simulations.save_all(error.failed + error.unknown) == 150
        assert rows_by_key(server.data_dir) == (150, 150)
        assert await ids_on_server(s, experiment) == {sim.id for sim in sims}


async def test_a_garbled_2xx_is_looked_up_not_repeated(tmp_path: Path) -> None:
    garble = FaultConfig(garble_rate=0.3, reset_after_rate=0.1, routes="POST /api/", seed=7)
    worker = ca.WorkerType(name="GenericWorker", version="1.0.0.0_RELEASE")
    async with (
        LocalComps(tmp_path / "server", faults=garble) as server,
        ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s,
    ):
        experiments = [ca.Experiment(name=f"e{i}") for i in range(6)]
        suites = [ca.Suite(name=f"suite{i}") for i in range(3)]
        items = [
            ca.WorkItem(name=f"wi{i}", worker=worker, environment_name="Local") for i in range(3)
        ]
        files = [[ca.AssetCollectionFile.from_bytes("a.txt", f"{i}".encode())] for i in range(3)]
        async with anyio.create_task_group() as tg:  # each create waits out its own retries
            for experiment in experiments:
                tg.start_soon(s.experiments.create, experiment)
            for suite in suites:
                tg.start_soon(s.suites.create, suite)
            for item in items:
                tg.start_soon(s.work_items.create, item)
            for group in files:
                tg.start_soon(s.asset_collections.create, group)
        sims = make_sims(experiments[0], 600)
        assert await s.simulations.save_all(sims, concurrency=3) == 600
        injected = dict(server.faults.injected)
    assert injected.get("garble", 0) > 0 and injected.get("reset_after", 0) > 0
    assert rows_by_key(server.data_dir) == (600, 600)
    assert rows_by_key(server.data_dir, "Experiment") == (6, 6)
    assert rows_by_key(server.data_dir, "Suite") == (3, 3)
    assert rows_by_key(server.data_dir, "WorkItem") == (3, 3)
    assert rows_by_key(server.data_dir, "AssetCollection") == (3, 3)
    assert None not in {e.id for e in [*experiments, *suites, *items]}


async def test_without_idempotency_tags_nothing_reserved_is_stored(tmp_path: Path) -> None:
    async with (
        LocalComps(tmp_path / "server") as server,
        ca.Session(
            server.url, token=server.token, token_cache_dir=tmp_path, idempotency_tags=False
        ) as s,
    ):
        experiment = await s.experiments.create(ca.Experiment(name="plain"))
        assert await s.simulations.save_all(make_sims(experiment, 150)) == 150
        stored = await s.simulations.list(
            ca.Query().select(["id"]).select_children(["tags"]).where_tag([ca.KEY_TAG])
        )
    assert rows_by_key(server.data_dir) == (150, 0) and stored == []  # no reserved tag at all
    assert rows_by_key(server.data_dir, "Experiment") == (1, 0)


async def test_a_caller_key_survives_the_process(tmp_path: Path) -> None:
    """Two sessions stand for two runs of one script: the second rebuilds the same objects."""
    async with LocalComps(tmp_path / "server") as server:

        async def run(count: int) -> list[ca.Simulation]:
            async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
                experiment = await s.experiments.create(ca.Experiment(name="it"), key="calib-0")
                sims = make_sims(experiment, count)
                await s.simulations.save_all(sims, key="calib-0")
                return sims

        first = await run(130)
        second = await run(250)  # the earlier run saved 130 of these, then "crashed"
        assert [s.id for s in second[:130]] == [s.id for s in first]
        assert rows_by_key(server.data_dir) == (250, 250)
        assert rows_by_key(server.data_dir, "Experiment") == (1, 1)


async def test_rerun_failed_that_crashed_after_its_clones_landed_is_finished_once(
    tmp_path: Path,
) -> None:
    """``rerun_failed`` dies after saving its clones (before commissioning or retiring the
    originals); run again, it finds those clones by key instead of making new ones, then
    finishes; a third run has nothing left to do."""
    failing = ca.Configuration(
        environment_name="Local",
        executable_path="python3",
        simulation_input_args='-c "raise SystemExit(1)"',
    )
    async with (
        LocalComps(tmp_path / "server") as server,
        ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s,
    ):
        experiment = await s.experiments.create(ca.Experiment(name="r", configuration=failing))
        await s.simulations.save_all(make_sims(experiment, 30), commission=True)
        await s.wait(experiment_id=experiment, timeout=60)

        class Crash(Exception):
            pass

        def crash(done: int, total: int | None) -> None:
            raise Crash

        with pytest.raises(Crash):
            await s.simulations.rerun_failed(experiment, on_progress=crash)
        assert rows_by_key(server.data_dir)[0] == 60  # the clones landed, nothing else ran
        rerun = await s.simulations.rerun_failed(experiment)
        assert len(rerun.clones) == len(rerun.retired) == 30
        assert rows_by_key(server.data_dir) == (60, 60)  # 30 originals + 30 clones, no more
        assert len(await ids_on_server(s, experiment)) == 60
        clones = await s.simulations.get_many(rerun.clones, children=["tags"])
        assert {c.tags["ClonedFromSimulation"] for c in clones if c.tags} == {
            str(r.id) for r in rerun.retired
        }
        assert all(c.state != ca.SimulationState.Created for c in clones)  # commissioned
        await s.wait(experiment_id=experiment, timeout=60)
        again = await s.simulations.rerun_failed(experiment)  # the originals are retired
        assert len(again.clones) == 30  # the clones failed too: each gets one clone of its own
        assert rows_by_key(server.data_dir)[0] == 90


async def test_server_killed_mid_save_then_restarted(tmp_path: Path) -> None:
    total = 1200
    server = LocalCompsProcess(tmp_path / "data").start()
    try:
        async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
            experiment = await s.experiments.create(ca.Experiment(name="killed"))
            sims = make_sims(experiment, total)
            outcome: list[BaseException | int] = []

            async def save() -> None:
                try:
                    outcome.append(await s.simulations.save_all(sims, concurrency=4))
                except ca.BatchSaveError as error:
                    outcome.append(error)

            async with anyio.create_task_group() as tg:
                tg.start_soon(save)
                await poll_until(
                    lambda: rows_by_key(server.data_dir)[0] >= 200, 60, "200 rows saved"
                )
                server.kill()  # SIGKILL mid-save, while batches are in flight
                await anyio.to_thread.run_sync(server.start)  # same data directory, same port
            if isinstance(outcome[0], ca.BatchSaveError):  # the documented recovery
                assert await s.simulations.save_all(sims) == total
            assert rows_by_key(server.data_dir) == (total, total)
            assert await ids_on_server(s, experiment) == {sim.id for sim in sims}
    finally:
        server.kill()


async def test_calibration_script_killed_mid_iteration_then_rerun(
    tmp_path: Path, anyio_backend: str
) -> None:
    if anyio_backend == "trio":
        pytest.skip("the script and the server run in their own processes: one backend is enough")
    sims = 120  # two batches per iteration
    with LocalCompsProcess(tmp_path / "data") as server:
        command = [
            *(sys.executable, str(EXAMPLE), "--server", server.url, "--token", server.token),
            *("--sims", str(sims), "--iterations", "3", "--out", str(tmp_path / "out")),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        script = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)  # noqa: ASYNC220
        try:
            # Kill the script once the second iteration's simulations start to land.
            await poll_until(
                lambda: rows_by_key(server.data_dir)[0] > sims or script.poll() is not None,
                120,
                "the second iteration to start saving",
            )
            assert script.poll() is None, "the script finished before it could be killed"
            script.send_signal(signal.SIGKILL)
            script.wait(30)
        finally:
            if script.poll() is None:
                script.kill()
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                [*command, "--json"], capture_output=True, text=True, env=env, timeout=300
            )
        )
        assert done.returncode == 0, done.stderr
        history = json.loads(done.stdout.splitlines()[-1])["history"]
        assert [h["simulations"] for h in history] == [sims] * 3  # every result harvested
        assert rows_by_key(server.data_dir) == (3 * sims, 3 * sims)
        assert rows_by_key(server.data_dir, "Experiment") == (3, 3)
        assert rows_by_key(server.data_dir, "AssetCollection") == (1, 1)


async def test_the_soak_benchmark_at_ci_size(anyio_backend: str) -> None:
    """benchmarks/soak_exactly_once.py, small: faults, one server kill, one client kill."""
    if anyio_backend == "trio":
        pytest.skip("the benchmark runs its own processes: one backend is enough")
    script = Path(__file__).parents[1] / "benchmarks" / "soak_exactly_once.py"
    command = [sys.executable, str(script), "--iterations", "2", "--sims", "60", "--seed", "3"]
    done = await anyio.run_process(command, check=False)
    figures = json.loads(done.stdout)
    assert done.returncode == 0 and figures["ok"], figures
    assert (figures["rows"], figures["duplicates"]) == (120, 0)
    assert figures["results_harvested_and_verified"] == 120 and figures["client_runs"] == 2
