"""The local server's dashboard — the eight views of the COMPS dashboard as charts over time —
loaded in headless Chromium (Debian's ``chromium``), its numbers checked against the database."""

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

from helpers import poll_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONFIG = (Path(__file__).parent / "fixtures" / "config.json").read_bytes()
VIEWS = (
    "queue",
    "workflows",
    "core",
    "home-disk",
    "per-owner",
    "cluster-disk",
    "per-state",
    "per-node-group",
)


def render(url: str, profile: Path, budget_ms: int = 10_000) -> str:
    """The DOM after the page's script ran for ``budget_ms`` of virtual time."""
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
            f"--virtual-time-budget={budget_ms}",
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


def chart_points(dom: str) -> dict[str, int]:
    return {
        k: int(v) for k, v in re.findall(r'data-testid="(chart-[^"]+)" data-points="(\d+)"', dom)
    }


def count(server: LocalComps, sql: str, *args: object) -> int:
    return int(server.store.query(sql, args)[0][0])


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
def test_the_eight_views_show_what_the_database_holds(tmp_path: Path) -> None:
    release = tmp_path / "release"
    hold = f'-c "import os,time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)"'
    with LocalComps(
        tmp_path / "server",
        users={"bob": "pw"},
        max_concurrent_runs=1,
        dashboard_interval_s=0.1,
    ) as server:

        async def populate() -> None:
            async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
                done = await s.experiments.create(
                    ca.Experiment(name="done", configuration=sir_configuration())
                )
                sims = [
                    ca.Simulation(
                        name=f"d{i}",
                        experiment_id=done.id,
                        files=[ca.SimulationFile.from_bytes("config.json", CONFIG)],
                    )
                    for i in range(3)
                ]
                await s.simulations.save_all(sims, commission=True)
                await s.wait(experiment_id=done, timeout=60)
                held = await s.experiments.create(
                    ca.Experiment(
                        name="held",
                        configuration=ca.Configuration(
                            environment_name="Local",
                            executable_path="python3",
                            simulation_input_args=hold,
                        ),
                    )
                )
                waiting = [ca.Simulation(name=f"h{i}", experiment_id=held.id) for i in range(3)]
                await s.simulations.save_all(waiting, commission=True)
                item = ca.WorkItem(
                    name="queued work",
                    environment_name="Local",
                    worker=ca.WorkerType(name="DockerWorker", version="1"),
                    files=[ca.WorkItemFile.work_order({"Execution": {"Command": "python3 -V"}})],
                )
                await s.work_items.save(item)
                await s.work_items.commission(item)
                running = ca.Query().where(["state=Running"])
                with anyio.fail_after(30):  # one held simulation runs; the others queue
                    while await s.simulations.count(running) != 1:
                        await anyio.sleep(0.05)
            async with ca.Session(
                server.url, username="bob", password="pw", token_cache_dir=tmp_path / "bob"
            ) as bob:
                exp = await bob.experiments.create(ca.Experiment(name="bob's"))
                await bob.simulations.save_all(
                    [ca.Simulation(name=f"b{i}", experiment_id=exp.id) for i in range(2)]
                )

        try:
            anyio.run(populate)
            samples = len(server.history.samples)
            anyio.run(poll_until, lambda: len(server.history.samples) >= samples + 3, 30, "samples")
            # The token in the fragment, as `serve` prints it: the page must read it from there.
            url = f"{server.url}/dashboard?refresh=2#token={server.token}"
            dom = render(url, tmp_path / "profile")
            values, points = shown(dom), chart_points(dom)
            assert "loaded" in values, dom[-3000:]

            # The queue, from the real COMPS route, as the database has it.
            queued = count(
                server,
                "SELECT COUNT(*) FROM entities WHERE kind='Simulation' AND state IN "
                "('CommissionRequested','Provisioning','Commissioned','Retry')",
            )
            running = count(
                server,
                "SELECT COUNT(*) FROM entities WHERE kind='Simulation' AND state=?",
                "Running",
            )
            assert (queued, running) == (2, 1)
            assert values["queue-queued"] == "2" and values["queue-running"] == "1"
            assert values["queue-now"] == "3"
            metrics = httpx.get(
                f"{server.url}/api/Metrics/Queue",
                params={"EnvironmentName": "Local"},
                headers={"X-COMPS-Token": server.token},
            ).json()
            (bucket,) = metrics["QueueState"]["Normal"]
            assert bucket["SimulationCount"] == 3 and bucket["Owner"] == "local"
            assert bucket["SimulationStateCount"]["Running"] == 1

            # Workflows: the commissioned work item waits behind the held simulation.
            assert values["workflows-now"] == "1"
            # Processed: per state, per owner (bob has processed nothing), per node group.
            assert values["per-state-Succeeded"] == "3" and values["per-state-now"] == "3"
            assert values["per-owner-local"] == "3" and values["per-owner-bob"] == "0"
            assert values["per-node-group-local"] == "3"
            # Disk: the user's outputs (home) and everything the server stores (cluster).
            jobs = [json.loads(r[0]) for r in server.store.query("SELECT doc FROM hpc_jobs")]
            outputs = sum(int(job.get("OutputDirectorySize") or 0) for job in jobs)
            assert outputs > 0 and values["home-disk-local"].endswith("KiB")
            assert float(values["home-disk-local"].split()[0]) == round(outputs / 1024, 1)
            # Core time: from the experiments' Stats (statsoperations=simulationusage).
            stats = httpx.get(
                f"{server.url}/api/Experiments",
                params={"fields": "Id", "statsoperations": "simulationusage"},
                headers={"X-COMPS-Token": server.token},
            ).json()["Stats"]
            core_s = sum(v["SimulationUsage"]["TotalCoreTimeUsage"] for v in stats.values())
            assert core_s > 0 and values["core-now"] == f"{core_s:.1f} core-s"

            # Charts over time, refreshed live: every view has a line of several points.
            for view in VIEWS:
                assert any(k.startswith(f"chart-{view}-") for k in points), view
            assert min(points.values()) >= 2
            assert points["chart-per-state-Succeeded"] >= samples + 3  # history + live samples
            refreshes = re.search(r'data-refreshes="(\d+)"', dom)
            assert refreshes is not None and int(refreshes.group(1)) >= 3

            # A host whose queue route answers 404 (here: an environment it does not have):
            # that view says so, the others still show.
            nowhere = f"{server.url}/dashboard?refresh=2&environment=Nowhere#token={server.token}"
            elsewhere = shown(render(nowhere, tmp_path / "profile3", 2000))
            assert "queue-unavailable" in elsewhere and "problems" in elsewhere
            assert elsewhere["per-state-Succeeded"] == "3"

            # Without a token the page loads but shows the server's refusal, not data.
            refused = shown(render(f"{server.url}/dashboard", tmp_path / "profile2", 2000))
            assert "problems" in refused and "loaded" not in refused
            assert httpx.get(f"{server.url}/dashboard/data").status_code == 401
        finally:
            release.touch()
