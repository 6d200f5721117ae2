"""A million simulations (issue 26): the local server answers what the SDK asks at scale from its
indexes. Every statement that real requests run (a keyed save and its resume, Stats in both
forms, iterate, count) is traced and its query plan checked: no full scan of a table that
grows with the number of simulations. (Sizes: ``benchmarks/bench_scale.py``.)"""

from __future__ import annotations

import pytest

import comps_async as ca
from comps_async.local import LocalComps

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
    with server.store.statements() as seen:
        await session.simulations.save_all(sims(), key=key)
        assert await session.simulations.save_all(sims(), key=key) == 250  # found by key
        for form in ("path", "query"):
            session.simulations.stats_form = None
            session.experiments.stats_form = form
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
    assert any("COVERING INDEX ix_entities_stats" in s for s in steps)  # Stats
    assert any("COVERING INDEX ix_entities_listing" in s for s in steps)  # counts of a listing
    assert any("ix_tags_kv_nocase" in s for s in steps)  # the exactly-once look-ups
