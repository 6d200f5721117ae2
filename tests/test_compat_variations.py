"""The SDK against each answer real COMPS might give where the protocol notes only infer
(PROTOCOL.md): the local server plays every ``Compat`` variation, over real sockets, and one
end-to-end flow must come out the same on all of them."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import comps_async as ca
from comps_async.local import Compat, LocalComps

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
                files=[ca.SimulationFile.from_bytes("config.json", f"sim {i}".encode())],
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
