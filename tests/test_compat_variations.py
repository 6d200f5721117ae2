"""The SDK against each answer real COMPS might give where the protocol notes only infer
(PROTOCOL.md): the local server plays every ``Compat`` variation, over real sockets, and one
end-to-end flow must come out the same on all of them."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import comps_async as ca
from comps_async.local import Compat, LocalComps

from helpers import rows_by_key

pytestmark = pytest.mark.anyio

VARIATIONS = {
    "as-inferred": Compat(),
    "no-content-range": Compat(content_range=False),
    "range-ignored": Compat(honour_range=False),
    "ids-ignored": Compat(ids_param="ignore"),
    "ids-rejected": Compat(ids_param="reject"),
    "stats-path-only": Compat(stats_forms=frozenset({"path"})),
    "stats-query-only": Compat(stats_forms=frozenset({"query"})),
    "no-stats": Compat(stats_forms=frozenset()),
    "md5-base64": Compat(listing_md5="base64"),
    "md5-none": Compat(listing_md5="none"),
    "parts-by-position": Compat(shared_parts=False),
}
BIG = bytes(range(256)) * 1200  # 300 KiB: fetched in ranges under the settings below
WORKLOAD = (
    "-c \"import os; os.makedirs('output', exist_ok=True); "
    "open('output/big.bin', 'wb').write(bytes(range(256)) * 1200); "
    "open('output/small.txt', 'w').write(open('config.json').read())\""
)


@pytest.mark.parametrize("name", sorted(VARIATIONS))
async def test_one_flow_on_every_variation(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="comps_async")
    downloads = ca.DownloadSettings(parallel_threshold_bytes=100_000, range_bytes=64_000)
    async with (
        LocalComps(tmp_path / "server", compat=VARIATIONS[name], max_concurrent_runs=2) as server,
        ca.Session(
            server.url, token=server.token, token_cache_dir=tmp_path, download=downloads
        ) as s,
    ):
        experiment = await s.experiments.create(
            ca.Experiment(
                name=name,
                configuration=ca.Configuration(
                    environment_name="Local",
                    executable_path="python3",
                    simulation_input_args=WORKLOAD,
                ),
            )
        )
        sims = [
            ca.Simulation(
                name=f"s{i}",
                experiment_id=experiment.id,
                files=[
                    ca.SimulationFile.from_bytes("config.json", f"sim {i}".encode()),
                    ca.SimulationFile.from_bytes("common.txt", b"the same for all"),
                ],
            )
            for i in range(12)
        ]
        with anyio.fail_after(60):
            assert await s.simulations.save_all(sims, commission=True) == 12
            query = ca.Query().select(["id"]).where([f"experiment_id={experiment.id}"])
            listed = [sim.id async for sim in s.simulations.iterate(query, page_size=5)]
            assert sorted(map(str, listed)) == sorted(str(sim.id) for sim in sims)  # no page lost
            fetched = await s.simulations.get_many([sim.id for sim in reversed(sims)])
            assert [f.id for f in fetched] == [sim.id for sim in reversed(sims)]
            final = await s.wait(experiment_id=experiment, timeout=60)
            assert final.succeeded == 12
            got = {}
            async with s.outputs.harvest(experiment, ["output/*"], tmp_path / "out") as results:
                async for result in results:
                    assert result.ok, result.error
                    got[(result.simulation_id, result.path)] = result.local_path
    assert len(got) == 24
    fell_back = any("Range ignored" in r.getMessage() for r in caplog.records)
    assert fell_back == (name == "range-ignored")  # the variation really played its answer
    for i, sim in enumerate(sims):
        assert got[(sim.id, "output/big.bin")].read_bytes() == BIG
        assert got[(sim.id, "output/small.txt")].read_bytes() == f"sim {i}".encode()


async def test_a_server_that_refuses_shared_parts_gets_one_part_per_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PROTOCOL.md row 11: a server that matches parts to files by position refuses a batch
    that attaches shared content once. The batch is sent again in pyCOMPS's layout (the refusal
    created nothing, so nothing is duplicated) and the host is remembered: the next session
    sends that layout from its first request."""
    shared = ca.SimulationFile.from_bytes("common.txt", b"the same for all")
    async with LocalComps(
        tmp_path / "server", compat=Compat(shared_parts=False), record_requests=True
    ) as server:
        assert server.recorder is not None
        for round_ in (1, 2):
            async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
                experiment = await s.experiments.create(ca.Experiment(name=f"round {round_}"))
                sims = [
                    ca.Simulation(name=f"s{i}", experiment_id=experiment.id, files=[shared])
                    for i in range(150)
                ]
                with anyio.fail_after(60):
                    assert await s.simulations.save_all(sims) == 150
                assert s.capabilities.shared_parts == "no"
                record = s.capabilities_file
            posts = [
                r
                for r in server.recorder.take()
                if r.method == "POST" and r.path == "/api/Simulations"
            ]
            answered = sorted(r.status for r in posts)
            accepted = [r for r in posts if r.status == 200]
            assert [r.body.count(b'filename="common.txt"') for r in accepted] in (
                [100, 50],
                [50, 100],
            )
            if round_ == 1:  # refused (once per batch already in flight), then saved
                assert answered in ([200, 200, 400], [200, 200, 400, 400])
            else:  # remembered: pyCOMPS's layout from the first request
                assert answered == [200, 200]
        rows, keys = rows_by_key(server.data_dir)
    assert (rows, keys) == (300, 300)  # 150 per round, none twice
    assert '"shared_parts": "no"' in record.read_text()
    assert sum("refused a batch" in r.getMessage() for r in caplog.records) in (1, 2)


@pytest.mark.parametrize(
    ("compat", "fact", "learned"),
    [
        (Compat(ids_param="reject"), "ids_param", "reject"),
        (Compat(ids_param="ignore"), "ids_param", "ignore"),
        (Compat(stats_forms=frozenset({"query"})), "stats_forms", ["query"]),
    ],
    ids=["ids-rejected", "ids-ignored", "stats-query-only"],
)
async def test_what_a_call_learns_about_its_host_is_kept_for_the_next_session(
    tmp_path: Path, compat: Compat, fact: str, learned: object
) -> None:
    """PROTOCOL.md rows 5 and 6, learned like row 11: the first session pays the refused or
    ignored request once and records the answer in the host's profile beside the token cache;
    the next session of the host asks the way that works from its first request."""
    async with LocalComps(tmp_path / "server", compat=compat, record_requests=True) as server:
        assert server.recorder is not None
        for round_ in (1, 2):
            async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
                experiment = await s.experiments.create(ca.Experiment(name=f"round {round_}"))
                sims = [ca.Simulation(name=f"s{i}", experiment_id=experiment.id) for i in range(3)]
                await s.simulations.save_all(sims)
                server.recorder.take()
                if fact == "ids_param":
                    wanted = [sim.id for sim in sims[1:]]  # (an ignoring server: the first two)
                    assert [g.id for g in await s.simulations.get_many(wanted)] == wanted
                    asked = [r for r in server.recorder.take() if "Ids=" in r.query]
                else:
                    assert await s.experiments.stats(experiment) == {"Created": 3}
                    asked = [r for r in server.recorder.take() if r.path.endswith("/Stats")]
                assert getattr(s.capabilities, fact) == learned
            # The first session tried the way that does not work here, once; the second never.
            assert len(asked) == (1 if round_ == 1 else 0), (round_, [r.path for r in asked])
