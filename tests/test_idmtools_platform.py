"""The ``COMPS_ASYNC`` idmtools platform (issue 25), against the local server in a process of its
own, with idmtools itself driving it (the ``interop`` extra; CI installs it)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comps_async.local import FaultConfig, LocalCompsProcess

from helpers import client_environment, login

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("idmtools_platform_comps") is None,
    reason="idmtools is in the 'interop' extra",
)

HERE = Path(__file__).parent
EXAMPLES = HERE.parent / "examples"
USER, PASSWORD = "tester", "idmtools-Secret-1"
TIMEOUT_S = 300


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalCompsProcess]:
    with LocalCompsProcess(tmp_path / "data", extra_args=("--user", f"{USER}:{PASSWORD}")) as p:
        yield p


@pytest.fixture
def workdir(local: LocalCompsProcess, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder with an idmtools.ini naming both platform types, and an environment whose
    token cache holds a login (so neither platform prompts)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = client_environment(tmp_path / "runtime")
    (cwd / "idmtools.ini").write_text(
        "".join(
            f"[{block}]\ntype = {kind}\nendpoint = {local.url}\nenvironment = Local\n"
            for block, kind in (("STOCK", "COMPS"), ("FAST", "COMPS_ASYNC"))
        )
    )
    login(local.url, USER, PASSWORD, env)
    return cwd, env


def run(cwd: Path, env: dict[str, str], *argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,  # a prompt fails the run instead of hanging it
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def query(data_dir: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{data_dir / 'comps.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def simulations_of(data_dir: Path, experiment: str) -> list[tuple[Any, ...]]:
    return query(
        data_dir,
        "SELECT name, state FROM entities WHERE kind = 'Simulation' AND parent_id = ? "
        "AND deleted = 0",
        experiment,
    )


def test_the_plugin_is_found_and_importing_comps_async_imports_no_idmtools(
    local: LocalCompsProcess, workdir: tuple[Path, dict[str, str]]
) -> None:
    cwd, env = workdir
    probe = (
        "import sys, json, comps_async\n"
        "imported = 'idmtools' in sys.modules\n"
        "from idmtools.core.platform_factory import Platform\n"
        f"p = Platform('COMPS_ASYNC', endpoint='{local.url}', environment='Local')\n"
        "q = Platform('FAST')\n"
        "print(json.dumps([imported, type(p).__name__, type(q).__name__, p.get_platform_python()]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        False,
        "COMPSAsyncPlatform",
        "COMPSAsyncPlatform",
        "python3",
    ]


def test_the_same_scenarios_give_the_same_results_on_both_platform_types(
    local: LocalCompsProcess, workdir: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """A sweep with an asset collection from a directory in a suite, run and waited; a
    two-file analyzer; from_id and extending; a failing simulation with num_retries; an SSMT
    work item — through ``type = COMPS`` and ``type = COMPS_ASYNC``."""
    cwd, env = workdir
    assets = tmp_path / "assets"
    (assets / "sub").mkdir(parents=True)
    (assets / "big.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    (assets / "sub" / "small.txt").write_text("small")
    scenario = str(HERE / "interop" / "idmtools_platforms.py")
    stock = run(cwd, env, scenario, "STOCK", str(assets))
    fast = run(cwd, env, scenario, "FAST", str(assets))

    assert (stock["platform"], fast["platform"]) == ("COMPSPlatform", "COMPSAsyncPlatform")
    ids = ("platform", "experiment", "failing_experiment", "raising")
    assert {k: v for k, v in fast.items() if k not in ids} == {
        k: v for k, v in stock.items() if k not in ids
    }
    assert fast["sweep"]["succeeded"] and fast["analysis"]["analyzed"] == 8
    assert fast["analysis"]["item_types"] == stock["analysis"]["item_types"]
    assert fast["failing"] == {
        "succeeded": False,
        "statuses": ["EntityStatus.FAILED", "EntityStatus.SUCCEEDED"],
    }
    # An analyzer that raises on one simulation: idmtools' pool stops; ours reports that one
    # and analyses the other seven.
    assert stock["raising"] == {"raised": "ValueError"}
    assert fast["raising"] == {"result": 7}

    for result in (stock, fast):
        # Extended by two, each simulation once; the failing one ran 1 + num_retries times.
        assert sorted(simulations_of(local.data_dir, result["experiment"])) == sorted(
            simulations_of(local.data_dir, stock["experiment"])
        )
        assert len(simulations_of(local.data_dir, result["experiment"])) == 10
        jobs = query(
            local.data_dir,
            "SELECT COUNT(*) FROM hpc_jobs j JOIN entities s ON s.id = j.entity_id "
            "WHERE s.parent_id = ? GROUP BY s.id ORDER BY COUNT(*)",
            result["failing_experiment"],
        )
        assert jobs == [(1,), (3,)]
    assert not query(local.data_dir, "SELECT * FROM tags WHERE key = 'comps_async.resume'")


def test_a_killed_calibration_run_again_creates_each_simulation_once(
    local: LocalCompsProcess, workdir: tuple[Path, dict[str, str]]
) -> None:
    """``examples/idmtools_calibration.py`` SIGKILLed while its second iteration's simulations
    are being created (the server holds every creation for a second), then run again: three
    experiments, each with exactly its simulations, and the same answer as an unbroken run."""
    cwd, env = workdir
    sims = 30
    local.configure_faults(FaultConfig(latency_s=1.0, routes="POST /api/Simulations"))
    script = [
        sys.executable, str(EXAMPLES / "idmtools_calibration.py"), "--block", "FAST",
        "--sims", str(sims),
    ]  # fmt: skip
    first = subprocess.Popen(
        script, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not query(
            local.data_dir,
            "SELECT id FROM entities WHERE kind = 'Experiment' AND name = ?",
            "calibration iteration 1",
        ):
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "iteration 1 was never created"
            time.sleep(0.02)  # poll the database with a deadline
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    (experiment,) = query(
        local.data_dir, "SELECT id FROM entities WHERE name = 'calibration iteration 1'"
    )
    assert len(simulations_of(local.data_dir, experiment[0])) < sims  # killed mid-creation

    local.configure_faults(FaultConfig())
    state = run(cwd, env, *script[1:])
    experiments = query(
        local.data_dir,
        "SELECT name, id FROM entities WHERE kind = 'Experiment' ORDER BY name",
    )
    assert [name for name, _ in experiments] == [f"calibration iteration {i}" for i in range(3)]
    for (_, experiment_id), iteration in zip(experiments, state["iterations"], strict=True):
        assert iteration["experiment"] == experiment_id
        rows = simulations_of(local.data_dir, experiment_id)
        assert len(rows) == sims and {state for _, state in rows} == {"Succeeded"}
        keys = query(
            local.data_dir,
            "SELECT COUNT(DISTINCT t.value) FROM tags t JOIN entities s ON s.id = t.entity_id "
            "WHERE s.parent_id = ? AND t.key = 'comps_async.key'",
            experiment_id,
        )
        assert keys == [(sims,)]
        assert iteration["analyzed"] == sims
    assert [round(i["best"], 3) for i in state["iterations"]][-1] == pytest.approx(0.3, abs=0.05)
    assert not query(local.data_dir, "SELECT * FROM tags WHERE key = 'comps_async.resume'")


def test_the_platform_works_inside_a_running_event_loop(
    local: LocalCompsProcess, workdir: tuple[Path, dict[str, str]]
) -> None:
    """As in Jupyter: idmtools' blocking calls made from code that runs in an event loop."""
    cwd, env = workdir
    script = (
        "import asyncio, json, sys\n"
        f"sys.argv = ['x', '--block', 'FAST', '--sims', '4', '--iterations', '1']\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        "import idmtools_calibration\n"
        "async def notebook():\n"
        "    idmtools_calibration.main()\n"
        "asyncio.run(notebook())\n"
    )
    state = run(cwd, env, "-c", script)
    assert state["iterations"][0]["analyzed"] == 4


def test_a_host_without_stats_is_waited_on_by_listing(tmp_path: Path) -> None:
    """Stats is inferred (PROTOCOL.md row 6): on a host that answers neither form, waiting and
    statuses fall back to listing the simulations, and the run still ends right."""
    from comps_async.local import Compat, LocalComps

    compat = Compat(stats_forms=frozenset())
    with LocalComps(tmp_path / "data", users={USER: PASSWORD}, compat=compat) as server:
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        env = client_environment(tmp_path / "runtime")
        (cwd / "idmtools.ini").write_text(
            f"[FAST]\ntype = COMPS_ASYNC\nendpoint = {server.url}\nenvironment = Local\n"
        )
        login(server.url, USER, PASSWORD, env)
        script = [str(EXAMPLES / "idmtools_calibration.py"), "--block", "FAST"]
        state = run(cwd, env, *script, "--sims", "4", "--iterations", "1")
        assert state["iterations"][0]["analyzed"] == 4
        # Stats was asked (and refused); the answer came from listing instead.
        assert any(key.endswith("/Stats") for key in server.faults.counters)
