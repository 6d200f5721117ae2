"""The local server's dashboard, loaded in headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest

import comps_async as ca
from comps_async.local import LocalComps, sir_configuration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONFIG = (Path(__file__).parent / "fixtures" / "config.json").read_bytes()


def render(url: str, profile: Path) -> str:
    """The DOM after the page's script ran."""
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


def shown(dom: str) -> dict[str, str]:
    return dict(re.findall(r'data-testid="([^"]+)"[^>]*>([^<]*)<', dom))


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_dashboard_numbers_match_the_database(tmp_path: Path) -> None:
    with LocalComps(tmp_path / "server", users={"bob": "pw"}) as server:

        async def populate() -> None:
            async with ca.Session(server.url, token=server.token) as s:
                exp = await s.experiments.create(
                    ca.Experiment(
                        name="dash",
                        configuration=sir_configuration(),
                    )
                )
                sims = [
                    ca.Simulation(
                        name=f"d{i}",
                        experiment_id=exp.id,
                        files=[ca.SimulationFile.from_bytes("config.json", CONFIG)],
                    )
                    for i in range(4)
                ]
                await s.simulations.save_all(sims)
                await s.simulations.commission(sims[:3])
                await s.wait(simulation_ids=[x.id for x in sims[:3]], timeout=60)
            async with ca.Session(
                server.url, username="bob", password="pw", token_cache_dir=tmp_path
            ) as bob:
                exp = await bob.experiments.create(ca.Experiment(name="bob's"))
                await bob.simulations.save_all(
                    [ca.Simulation(name=f"b{i}", experiment_id=exp.id) for i in range(2)]
                )

        anyio.run(populate)
        dom = render(f"{server.url}/dashboard?token={server.token}", tmp_path / "profile")
        values = shown(dom)
        assert "loaded" in values, dom[:2000]
        db = {
            r[0]: r[1]
            for r in server.store.query(
                "SELECT state, COUNT(*) FROM entities WHERE kind='Simulation' GROUP BY state"
            )
        }
        assert db == {"Succeeded": 3, "Created": 3}
        assert values["state-Succeeded"] == "3" and values["state-Created"] == "3"
        assert values["owner-local-Succeeded"] == "3" and values["owner-local-Created"] == "1"
        assert values["owner-bob-Created"] == "2"
        assert values["queued"] == "0" and values["running"] == "0"
        jobs = [json.loads(r[0]) for r in server.store.query("SELECT doc FROM hpc_jobs")]
        outputs = sum(int(job["OutputDirectorySize"]) for job in jobs)
        blobs = sum(p.stat().st_size for p in (server.data_dir / "blobs").glob("??/*"))
        assert int(values["disk-bytes"]) == outputs + blobs > 0
        assert float(values["core-hours"]) > 0
        # Without a token the page loads but shows the server's refusal, not data.
        refused = shown(render(f"{server.url}/dashboard", tmp_path / "profile2"))
        assert "loaded" not in refused
        assert httpx.get(f"{server.url}/dashboard/data").status_code == 401
