"""The comps-async command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import anyio
import httpx
import pytest
from click.testing import CliRunner, Result

import comps_async as ca
from comps_async.cli.chart import active_days
from comps_async.cli.main import _register, cli
from comps_async.local import LocalComps, sir_configuration

_register()


def test_serve_prints_url_and_token_and_serves(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comps_async.cli",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--port",
            "0",
            "--user",
            "alice:wonder",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any(line.startswith("token: ") for line in lines):
            assert time.monotonic() < deadline, lines
            lines.append(process.stdout.readline())
        url = re.search(r"server at (http://127\.0\.0\.1:\d+)", "".join(lines))
        assert url is not None
        assert any("password (shown once)" in line for line in lines)
        token = next(line for line in lines if line.startswith("token: ")).split()[1]
        lines.append(process.stdout.readline())  # printed right after the token
        assert f"dashboard: {url.group(1)}/dashboard#token={token}" in lines[-1]
        response = httpx.get(f"{url.group(1)}/api/Suites", headers={"X-COMPS-Token": token})
        assert response.status_code == 200 and response.json() == {"Suites": []}
    finally:
        process.send_signal(signal.SIGTERM)  # what a service manager sends
        process.wait(30)
    assert process.returncode == 0
    assert (tmp_path / "comps.sqlite3").exists() and (tmp_path / "users.json").exists()


def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "comps_async.cli",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--user",
            "no-colon",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "NAME:PASSWORD" in result.stderr and "Traceback" not in result.stderr


# --- client commands, in-process with click's runner against the shared server -------------

CONFIG = (Path(__file__).parent / "fixtures" / "config.json").read_bytes()


FORGED = ",".join(
    [
        "1",
        "Auth",
        "local",
        "h",
        "",
        "h",
        "2099-01-01-00-00-00",
        "2024-01-01-00-00-00",
        "",
        "",
        "",
        "",
        "local",
        "Local",
        "0" * 64,
    ]
)


def run(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def env(comps_server: LocalComps) -> dict[str, str]:
    return {"COMPS_SERVER": comps_server.url, "COMPS_TOKEN": comps_server.token}


@pytest.fixture(scope="module")
def finished(comps_server: LocalComps) -> dict[str, str]:
    """An experiment with 3 succeeded and 2 failed simulations."""

    async def setup() -> dict[str, str]:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            exp = await s.experiments.create(
                ca.Experiment(
                    name="cli-exp",
                    configuration=sir_configuration(),
                )
            )
            sims = [
                ca.Simulation(
                    name=f"c{i}",
                    experiment_id=exp.id,
                    tags={"beta": i / 10},
                    files=[
                        ca.SimulationFile.from_bytes(
                            "config.json", CONFIG if i < 3 else b"not json"
                        )
                    ],
                )
                for i in range(5)
            ]
            await s.simulations.save_all(sims, commission=True)
            await s.wait(experiment_id=exp, timeout=60)
            return {
                "experiment": str(exp.id),
                "simulation": str(sims[0].id),
                "failed": str(sims[4].id),
            }

    return anyio.run(setup)


def test_main_commands_are_registered() -> None:
    for command in ("whoami", "download", "cleanup", "doctor"):  # help is read by people
        assert "``" not in run([command, "--help"]).output
    result = run(["--help"])
    for command in (
        "login",
        "serve",
        "demo",
        "status",
        "tail",
        "download",
        "create-asset-collection",
        "clone-simulation",
        "rerun-failed",
        "cleanup",
        "chart",
        "whoami",
        "analyze",
        "doctor",
    ):
        assert command in result.output


def test_status_tail_and_download(
    env: dict[str, str], finished: dict[str, str], tmp_path: Path
) -> None:
    status = run(["status", "experiment", finished["experiment"], "--json"], env)
    assert status.exit_code == 0
    assert json.loads(status.stdout)["counts"] == {"Succeeded": 3, "Failed": 2}
    one = run(["status", "simulation", finished["simulation"], "--json"], env)
    assert json.loads(one.stdout)["counts"] == {"Succeeded": 1}
    who = run(["whoami", "--json"], env)
    assert json.loads(who.stdout)["user"] == "local"
    assert json.loads(who.stdout)["environments"] == ["Local"]
    latest = run(["status", "experiment", "latest", "--json"], env)
    assert latest.exit_code == 0 and "counts" in json.loads(latest.stdout)
    tail = run(
        [
            "tail",
            "simulation",
            finished["simulation"],
            "--file",
            "stdout.txt",
            "--bytes",
            "200",
            "--json",
        ],
        env,
    )
    assert "peak infected" in json.loads(tail.stdout)["stdout.txt"]
    failed_tail = run(["tail", "simulation", finished["failed"], "--file", "stderr.txt"], env)
    assert "JSONDecodeError" in failed_tail.output
    download = run(
        [
            "download",
            "experiment",
            finished["experiment"],
            "output/*.json",
            "--dest",
            str(tmp_path),
            "--json",
        ],
        env,
    )
    landed = json.loads(download.stdout)["files"]
    assert len(landed) == 3 and all(Path(f["local_path"]).is_file() for f in landed)
    assert all(
        Path(f["local_path"]).is_relative_to(tmp_path / finished["experiment"]) for f in landed
    )


def test_asset_collection_clone_rerun_and_cleanup(
    env: dict[str, str], finished: dict[str, str], comps_server: LocalComps, tmp_path: Path
) -> None:
    (tmp_path / "inputs" / "bin").mkdir(parents=True)
    (tmp_path / "inputs" / "bin" / "tool.exe").write_bytes(b"MZ" + os.urandom(16))
    (tmp_path / "inputs" / "idmtools.log").write_text("skip me")
    created = run(
        ["create-asset-collection", str(tmp_path / "inputs"), "--name", "tools", "--json"], env
    )
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["files"] == 1
    clone = run(["clone-simulation", finished["simulation"], "--json"], env)
    clone_id = json.loads(clone.stdout)["simulation_id"]
    rerun = run(["rerun-failed", finished["experiment"], "--create-only", "--json"], env)
    assert len(json.loads(rerun.stdout)["rerun"]) == 2

    async def check() -> None:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            copy = await s.simulations.get(clone_id, children=["tags", "files"])
            assert (copy.tags or {})["ClonedFromSimulation"] == finished["simulation"]
            assert copy.files and copy.files[0].file_name == "config.json"
            old = await s.simulations.get(finished["failed"], children=["tags"])
            assert "ClonedToRerun" in (old.tags or {})

    anyio.run(check)
    name = f"cleanup-{uuid4()}"
    anyio.run(_make_suites, comps_server, name)
    dry = run(["cleanup", "suite", "--name-contains", name, "--json"], env)
    assert len(json.loads(dry.stdout)["would_delete"]) == 2
    table = run(["cleanup", "suite", "--name-contains", name], {**env, "COLUMNS": "60"})
    for row in json.loads(dry.stdout)["would_delete"]:  # ids are never cut, even when narrow
        assert row["id"] in table.output
    done = run(["cleanup", "suite", "--name-contains", name, "--execute", "--json"], env)
    assert len(json.loads(done.stdout)["deleted"]) == 2
    again = run(["cleanup", "suite", "--name-contains", name, "--json"], env)
    assert json.loads(again.stdout)["would_delete"] == []


async def _make_suites(server: LocalComps, name: str) -> None:
    async with ca.Session(server.url, token=server.token) as s:
        for i in range(2):
            await s.suites.create(ca.Suite(name=f"{name}-{i}"))


def test_chart(env: dict[str, str], finished: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "chart.png"
    result = run(
        [
            "chart",
            finished["experiment"],
            "--channel",
            "Infected",
            "--by-tag",
            "beta",
            "--out",
            str(out),
            "--json",
        ],
        env,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["simulations"] == 3
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run(["chart", finished["experiment"], "--channel", "Nope"], env)
    assert bad.exit_code != 0 and "no channel 'Nope'" in bad.output


@pytest.mark.parametrize(
    ("args", "extra_env", "code", "message"),
    [
        (["status", "experiment", "00000000-0000-0000-0000-000000000000"], {}, 1, "no experiment"),
        (["status", "experiment", "not-an-id"], {}, 2, "not a valid id"),
        (["tail", "simulation", "latest", "--file", "nope.txt"], {}, 1, "no output"),
        (
            ["status", "experiment", "latest"],
            {"COMPS_SERVER": "http://127.0.0.1:9"},
            1,
            "reachable",
        ),
        (["status", "experiment", "latest"], {"COMPS_TOKEN": "1,Auth,x"}, 1, "401"),
    ],
)
def test_errors_are_one_line_with_meaningful_exit_codes(
    env: dict[str, str],
    finished: dict[str, str],
    args: list[str],
    extra_env: dict[str, str],
    code: int,
    message: str,
) -> None:
    result = CliRunner().invoke(cli, args, env={**env, **extra_env})
    assert result.exit_code == code, result.output
    assert message in result.output.lower() or message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_demo_is_the_main_job(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "comps_async.cli",
            "demo",
            "--sims",
            "12",
            "--out",
            str(tmp_path / "out"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["succeeded"] == 12 and summary["failed"] == 0
    assert Path(summary["chart"]).read_bytes()[:4] == b"\x89PNG"
    rows = Path(summary["summary_csv"]).read_text().splitlines()
    assert len(rows) == 13 and rows[0].startswith("simulation,Base_Infectivity")
    # Analyzed as they landed (Session.analyze): one cached map result per simulation.
    assert len(list((tmp_path / "out" / "analysis-cache").rglob("*.pickle"))) == 12


def test_chart_without_matplotlib_says_how_to_install(
    env: dict[str, str], finished: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    result = CliRunner().invoke(
        cli, ["chart", finished["experiment"], "--out", str(tmp_path / "c.png")], env=env
    )
    assert result.exit_code == 1
    assert "pip install 'comps-async[charts]'" in result.output
    assert "Traceback" not in result.output


def test_login_checks_the_password_even_with_a_cached_token(tmp_path: Path) -> None:
    """A wrong password is an error (rc != 0), not "logged in" with the token cached earlier."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    with LocalComps(tmp_path / "server", users={"alice": "right-pw"}) as server:
        env = {"COMPS_SERVER": server.url, "XDG_RUNTIME_DIR": str(runtime)}
        good = run(["login", "-u", "alice"], {**env, "COMPS_PASSWORD": "right-pw"})
        assert good.exit_code == 0, good.output
        assert list(runtime.glob("COMPS_Authtoken_*"))  # cached
        bad = run(["login", "-u", "alice"], {**env, "COMPS_PASSWORD": "wrong-pw"})
    assert bad.exit_code != 0
    assert "logged in" not in bad.output
    assert "Bad username/password" in bad.output


def test_serve_on_a_busy_port_says_so_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "new-data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = ["serve", "--data-dir", str(data_dir), "--port", str(port)]
        done = subprocess.run(
            [sys.executable, "-m", "comps_async.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"port {port}" in done.stderr and "in use" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not data_dir.exists()  # no database, no user, no password shown to nobody


def test_rerun_failed_commissions_the_clones_only(
    comps_server: LocalComps, env: dict[str, str]
) -> None:
    """A simulation the user saved but held back (Created) is not commissioned with them."""

    async def setup() -> tuple[str, str]:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            exp = await s.experiments.create(
                ca.Experiment(
                    name="rerun-only-clones",
                    configuration=ca.Configuration(
                        environment_name="Local",
                        executable_path="python3",
                        simulation_input_args='-c "raise SystemExit(1)"',
                    ),
                )
            )
            failing = ca.Simulation(name="fails", experiment_id=exp.id)
            await s.simulations.save_all([failing], commission=True)
            await s.wait(experiment_id=exp, timeout=60)
            held = ca.Simulation(name="held back", experiment_id=exp.id)
            await s.simulations.save_all([held])
            return str(exp.id), str(held.id)

    experiment, held = anyio.run(setup)
    rerun = run(["rerun-failed", experiment, "--json"], env)
    assert rerun.exit_code == 0, rerun.output
    (clone,) = json.loads(rerun.stdout)["rerun"]

    async def states() -> dict[str, str]:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            sims = await s.simulations.get_many([held, clone])
            return {str(sim.id): str(sim.state) for sim in sims}

    found = anyio.run(states)
    assert found[held] == "Created"
    assert found[clone] != "Created"  # commissioned (and perhaps already run)


def test_a_download_pattern_that_matches_nothing_says_so(
    env: dict[str, str], finished: dict[str, str], tmp_path: Path
) -> None:
    pattern = "output/no-such-*.csv"
    args = ["download", "experiment", finished["experiment"], pattern, "--dest", str(tmp_path)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1
    assert "no output matched output/no-such-*.csv" in result.output
    assert not any(tmp_path.rglob("*.csv"))


def test_download_of_a_work_item_names_it_as_one(
    comps_server: LocalComps, env: dict[str, str], tmp_path: Path
) -> None:
    async def setup() -> str:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            item = ca.WorkItem(
                name="cli-wi",
                environment_name="Local",
                worker=ca.WorkerType(name="DockerWorker", version="1.0.0.0_RELEASE"),
                files=[
                    ca.WorkItemFile.work_order(
                        {"Execution": {"Command": "python3 -c \"open('r.txt','w').write('x')\""}}
                    )
                ],
            )
            await s.work_items.save(item)
            await s.work_items.commission(item)
            assert (await s.wait(work_item_id=item, timeout=60)).succeeded == 1
            return str(item.id)

    item = anyio.run(setup)
    args = ["download", "workitem", item, "r.txt", "--dest", str(tmp_path), "--json"]
    result = run(args, env)
    assert result.exit_code == 0, result.output
    (landed,) = json.loads(result.stdout)["files"]
    assert landed["work_item_id"] == item and "simulation_id" not in landed


def test_the_chart_stops_soon_after_the_epidemic_does() -> None:
    over_by_200 = [0.0] * 10 + [0.1 * i for i in range(10)] + [1.0] * 30 + [0.0] * 325
    assert len(over_by_200) == 375
    assert 55 <= active_days([over_by_200, [0.0] * 375]) <= 65  # not 375
    assert active_days([[0.0] * 30]) >= 1  # nothing happened: still a valid axis


def test_the_demo_without_matplotlib_names_the_extra_to_install(tmp_path: Path) -> None:
    """The hint keeps its ``[charts]`` (rich would read it as markup and drop it)."""
    blocker = tmp_path / "no-matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "COLUMNS": "200"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "comps_async.cli",
            "demo",
            "--sims",
            "4",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'comps-async[charts]'" in result.stdout + result.stderr


ANALYZER_FILE = """
import comps_async as ca


class PeakInfected(ca.Analyzer):
    filenames = ["output/InsetChart.json"]

    def map(self, data, item):
        return max(data["output/InsetChart.json"]["Channels"]["Infected"]["Data"])

    def reduce(self, results, failures):
        return {"mapped": len(results), "failed": len(failures), "peak": max(results.values())}
"""


def test_analyze_runs_an_analyzer_given_as_module_class(
    env: dict[str, str], finished: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "my_analyzers.py").write_text(ANALYZER_FILE)
    spec = f"{tmp_path / 'my_analyzers.py'}:PeakInfected"
    args = ["analyze", finished["experiment"], spec, "--cache", str(tmp_path / "c"), "--json"]
    first = run([*args, "--processes", "2"], env)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    reduced = report["reduced"]["PeakInfected"]
    assert (reduced["mapped"], reduced["failed"]) == (3, 2)  # the failed ones are reported
    assert 0 < reduced["peak"] <= 1 and report["cached"] == 0
    again = json.loads(run(args, env).stdout)
    assert again["cached"] == 3 and again["reduced"] == report["reduced"]
    bad = run(["analyze", finished["experiment"], "os:path"], env)
    assert bad.exit_code == 2 and "not an Analyzer" in bad.output
