"""A million simulations (issue 26): the local server answers what the SDK asks at scale from its
indexes. Every statement that real requests run (a keyed save and its resume, Stats in both
forms, iterate, count) is traced and its query plan checked: no full scan of a table that
grows with the number of simulations. (Sizes: ``benchmarks/bench_scale.py``.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import comps_async as ca
from comps_async._concurrency import for_each_bounded
from comps_async.local import LocalComps
from comps_async.local.jobs import Jobs
from comps_async.local.store import Store

from helpers import PeakInFlight

pytestmark = pytest.mark.anyio


async def test_what_the_sdk_asks_reads_indexes_not_tables(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment
) -> None:
    def sims() -> list[ca.Simulation]:
        return [
            ca.Simulation(name=f"s{i}", experiment_id=experiment.id, tags={"i": i})
            for i in range(250)
        ]

    key = f"scale-{experiment.id}"
    await session.experiments.stats(experiment)  # (the Stats form is learned outside the trace)
    with server.store.statements() as seen:
        await session.simulations.save_all(sims(), key=key)
        assert await session.simulations.save_all(sims(), key=key) == 250  # found by key
        for form in ("path", "query"):
            session.capabilities.stats_forms = [form]
            assert sum((await session.experiments.stats(experiment)).values()) == 250
        query = ca.Query().select(["id", "state"]).where([f"experiment_id={experiment.id}"])
        assert len([s async for s in session.simulations.iterate(query, page_size=100)]) == 250
        assert await session.simulations.count(query) == 250
    reads = [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]
    plans = {sql: server.store.plan(sql) for sql in reads}
    for sql, plan in plans.items():
        for step in plan:
            # A scan of a growing table (entities, tags, files, jobs) reads every row.
            assert not step.startswith(("SCAN e", "SCAN entities", "SCAN t", "SCAN files")), (
                sql,
                plan,
            )
    steps = [step for plan in plans.values() for step in plan]
    assert any("state_counts USING PRIMARY KEY" in s for s in steps)  # Stats
    assert any("COVERING INDEX ix_entities_listing" in s for s in steps)  # counts of a listing
    assert any("ix_tags_kv_nocase" in s for s in steps)  # the exactly-once look-ups


def direct_counts(server: LocalComps, experiment: ca.Experiment) -> dict[str, int]:
    rows = server.store.query(
        "SELECT state, COUNT(*) FROM entities WHERE kind = 'Simulation' AND parent_id = ? "
        "AND deleted = 0 GROUP BY state",
        (str(experiment.id),),
    )
    return {str(r[0]): int(r[1]) for r in rows}


async def test_stats_kept_by_triggers_agree_with_counting_rows(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment, tmp_path: Path
) -> None:
    """Stats come from counts the database keeps on every write (a few rows to read at a
    million simulations): through creation, running, cancelling and deleting they agree with
    counting the rows, and a data dir from before the counts is counted when opened."""
    sims = [ca.Simulation(name=f"s{i}", experiment_id=experiment.id) for i in range(40)]
    await session.simulations.save_all(sims)
    assert await session.experiments.stats(experiment) == {"Created": 40}
    await session.experiments.commission(experiment)
    await session.simulations.cancel(sims[:10])
    await session.simulations.delete(sims[10:15])
    await session.wait(experiment_id=experiment.id, timeout=120)
    counts = await session.experiments.stats(experiment)
    assert counts == direct_counts(server, experiment) and sum(counts.values()) == 35
    assert counts.get("Canceled", 0) >= 1 and len(counts) >= 2  # ran, cancelled, deleted

    old = Store(tmp_path / "old.sqlite3")  # a data dir from before the counts
    for drop in (
        "TRIGGER tr_counts_insert",
        "TRIGGER tr_counts_update",
        "TRIGGER tr_counts_delete",
    ):
        old.run(lambda c, drop=drop: c.execute(f"DROP {drop}"))
    old.run(lambda c: c.execute("DROP TABLE state_counts"))
    old.run(
        lambda c: c.execute(
            "INSERT INTO entities (id, kind, parent_id, state, date_created, last_modified) "
            "VALUES ('a', 'Simulation', 'e', 'Created', 'd', 'd')"
        )
    )
    old.close()
    reopened = Store(tmp_path / "old.sqlite3")
    assert reopened.query("SELECT state, n FROM state_counts WHERE parent_id = 'e'")[0][1] == 1
    reopened.close()


async def test_a_fan_out_runs_a_few_tasks_not_one_per_item() -> None:
    """A bulk operation over 5,000 items holds ``concurrency`` tasks, not 5,000."""
    most = 0

    async def touch(item: int) -> int:
        nonlocal most
        most = max(most, len(anyio.get_running_tasks()))
        await anyio.lowlevel.checkpoint()
        return item * 2

    seen: list[int] = []
    await for_each_bounded(range(5000), touch, 8, lambda index, result: seen.append(result))
    assert sorted(seen) == [i * 2 for i in range(5000)]
    assert most <= 8 + 3  # the workers, the test's own task and the runner's


async def test_bulk_deletes_report_progress_and_finish_after_a_crash(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment, tmp_path: Path
) -> None:
    """Deleting 1,200 simulations: at most ``concurrency`` requests in flight, progress as they
    land; a run that dies part-way (here its progress callback raises) is finished by the same
    call, and the server's rows say every one is deleted."""
    sims = [ca.Simulation(name=f"s{i}", experiment_id=experiment.id) for i in range(1200)]
    await session.simulations.save_all(sims)

    class Crash(Exception):
        pass

    def crash_at_500(done: int, total: int | None) -> None:
        if done == 500:
            raise Crash

    with pytest.raises(Crash):
        await session.simulations.delete(sims, concurrency=8, on_progress=crash_at_500)
    assert 500 <= deleted_rows(server, experiment) < 1200

    progress: list[tuple[int, int | None]] = []
    peak = PeakInFlight(lambda r: r.method == "DELETE")
    async with ca.Session(
        server.url, token=server.token, policies=[peak], token_cache_dir=tmp_path
    ) as s:
        await s.simulations.delete(
            sims, concurrency=8, on_progress=lambda d, t: progress.append((d, t))
        )
    assert progress[-1] == (1200, 1200) and len(progress) == 1200
    assert 1 < peak.peak <= 8
    assert deleted_rows(server, experiment) == 1200


def deleted_rows(server: LocalComps, experiment: ca.Experiment) -> int:
    rows = server.store.query(
        "SELECT COUNT(*) FROM entities WHERE kind = 'Simulation' AND parent_id = ? AND deleted = 1",
        (str(experiment.id),),
    )
    return int(rows[0][0])


def test_usage_is_summed_in_the_store_not_in_memory(tmp_path: Path) -> None:
    """The dashboard samples usage every 30 s and Stats answer ``simulationusage``: both sum
    the HPC jobs in one SQL aggregate per owner (a million jobs once cost the server a list of
    a million objects per sample), to the millisecond."""
    store = Store(tmp_path / "usage.sqlite3")
    jobs = [  # owner, cores, start, end, output bytes
        ("ann", 2, "2026-12-03T10:00:00.0000000Z", "2026-12-03T10:00:01.5000000Z", 100),
        ("ann", 0, "2026-12-03T10:00:00.0000000Z", "2026-12-03T10:01:00.0000000Z", 50),
        ("bob", 4, "2026-12-03T10:00:00.0000000Z", None, 7),  # still running: no time yet
    ]

    def insert(conn: Any) -> None:
        for index, (owner, cores, start, end, size) in enumerate(jobs):
            sim = f"sim-{index}"
            conn.execute(
                "INSERT INTO entities (kind, id, parent_id, owner, name, state, deleted, doc, "
                "date_created, last_modified) VALUES ('Simulation', ?, 'exp', ?, 's', "
                "'Succeeded', 0, '{}', '', '')",
                (sim, owner),
            )
            doc = {"StartTime": start, "EndTime": end, "OutputDirectorySize": size}
            doc["Configuration"] = {"MinCores": cores}
            conn.execute(
                "INSERT INTO hpc_jobs (id, entity_id, doc) VALUES (?, ?, ?)",
                (f"job-{index}", sim, json.dumps(doc)),
            )

    store.run(insert)
    with store.statements() as seen:
        usage = Jobs(store).usage_by_owner()
    assert len([sql for sql in seen if "hpc_jobs" in sql]) == 1
    ann, bob = usage["ann"], usage["bob"]
    assert (ann.jobs, ann.min_cores, ann.max_cores, ann.output_bytes) == (2, 1, 2, 150)
    assert ann.core_seconds == pytest.approx(2 * 1.5 + 1 * 60, abs=0.01)
    assert (bob.jobs, bob.core_seconds, bob.output_bytes) == (1, 0.0, 7)
    assert Jobs(store).usage_by_owner("another-experiment") == {}
