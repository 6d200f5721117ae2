"""The real clients as our oracle: pyCOMPS and idmtools, unchanged, against the local server in a
process of its own (issue 20). They need the ``interop`` extra; CI installs it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from comps_async.local import LocalCompsProcess

from helpers import client_environment, login

# Looked up, not imported: importing pyCOMPS makes it log to COMPS_log.log in the cwd.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("COMPS") is None, reason="pyCOMPS is in the 'interop' extra"
)

HERE = Path(__file__).parent
EXAMPLES = HERE.parent / "examples"
USER, PASSWORD = "tester", "interop-Secret-1"
TIMEOUT_S = 300


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalCompsProcess]:
    with LocalCompsProcess(tmp_path / "data", extra_args=("--user", f"{USER}:{PASSWORD}")) as p:
        yield p


@pytest.fixture
def client_env(tmp_path: Path) -> dict[str, str]:
    """The clients' environment: a private runtime dir for their token cache (pyCOMPS and
    comps-async share it), and no COMPS_SERVER that could redirect them."""
    return client_environment(tmp_path / "runtime")


def query(data_dir: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{data_dir / 'comps.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def test_pycomps_runs_unchanged(
    local: LocalCompsProcess, client_env: dict[str, str], tmp_path: Path
) -> None:
    """Every operation of ``interop/pycomps_scenario.py`` (login, suites, experiments, save_all
    of 300 with files, QueryCriteria, tags, commission and polling, outputs, asset collections
    with a chunked 11 MiB upload, missing files, work items and relations, cancel, and the
    ``python -m COMPS`` tools) works, and the server holds exactly what was asked for."""
    work = tmp_path / "work"
    work.mkdir()
    scenario = HERE / "interop" / "pycomps_scenario.py"
    done = subprocess.run(
        [sys.executable, str(scenario), local.url, USER, PASSWORD, str(work)],
        cwd=work,  # pyCOMPS writes COMPS_log.log where it runs
        env=client_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    failures = [f"{r['op']}: {r['detail']}" for r in lines if r.get("ok") is False]
    assert not failures, "\n\n".join(failures) + done.stderr[-2000:]
    assert lines[-1] == {"operations": 37, "failed": []}, done.stdout[-2000:]
    assert done.returncode == 0

    # Rows, read from the server's database: 300 + the sleeper + the one saved by md5 + the
    # clone + the re-run of the failed one; each of the 300 names exactly once among originals.
    (experiment,) = query(
        local.data_dir, "SELECT id FROM entities WHERE name = ?", "interop experiment"
    )
    sims = query(
        local.data_dir,
        "SELECT name, state FROM entities WHERE kind = 'Simulation' AND parent_id = ? "
        "AND deleted = 0",
        experiment[0],
    )
    assert len(sims) == 304
    names = [name for name, _ in sims]
    assert len({n for n in names if str(n).startswith("sim ")}) == 300
    assert names.count("sim 007") == 2 and names.count("sim 299") == 2
    (big,) = query(local.data_dir, "SELECT length FROM files WHERE doc LIKE '%big.bin%'")
    assert big == (11 * 1024 * 1024,)


def test_idmtools_runs_unchanged(
    local: LocalCompsProcess, client_env: dict[str, str], tmp_path: Path
) -> None:
    """The idmtools recipe of the docs (howto/real-comps.md): an ini block, one ``comps-async
    login`` (idmtools then finds the token pyCOMPS-style and never prompts), a 50-simulation
    sweep of ``JSONConfiguredPythonTask`` with a 12 MiB asset from a directory, run and wait, and
    AnalyzeManager — through ``examples/idmtools_offline.py``, unchanged idmtools code."""
    if importlib.util.find_spec("idmtools_platform_comps") is None:
        pytest.skip("idmtools is in the 'interop' extra")
    cwd, assets = tmp_path / "cwd", tmp_path / "assets"
    cwd.mkdir()
    (assets / "sub").mkdir(parents=True)
    big = os.urandom(12 * 1024 * 1024)
    (assets / "big.bin").write_bytes(big)
    (assets / "sub" / "small.txt").write_text("small")
    (cwd / "idmtools.ini").write_text(
        f"[LOCAL_COMPS]\ntype = COMPS\nendpoint = {local.url}\nenvironment = Local\n"
    )
    login(local.url, USER, PASSWORD, client_env)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "idmtools_offline.py"), "--assets", str(assets)],
        cwd=cwd,
        env=client_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,  # a prompt would fail the run, not hang it
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    betas = [round(0.1 + 0.5 * i / 49, 4) for i in range(50)]
    assert summary["succeeded"] == 50 and summary["analyzed"] == 50
    assert summary["best_beta"] == min(betas, key=lambda b: abs(b - 0.35))

    states = query(
        local.data_dir,
        "SELECT state, COUNT(*) FROM entities WHERE kind = 'Simulation' AND parent_id = ? "
        "GROUP BY state",
        summary["experiment"],
    )
    assert states == [("Succeeded", 50)]
    md5 = str(uuid.UUID(hashlib.md5(big).hexdigest()))  # stored in the wire's UUID form
    stored = query(local.data_dir, "SELECT length FROM files WHERE md5 = ?", md5)
    assert stored and all(row == (len(big),) for row in stored)


def test_idmtools_scheduling_tags_and_ssmt_login_as_on_comps(
    local: LocalCompsProcess, client_env: dict[str, str], tmp_path: Path
) -> None:
    """idmtools' scheduling (WorkOrder.json with Command, NodeGroupName, NumCores, Environment;
    no ExecutablePath) runs; a tag without a value reads back "" through pyCOMPS; a work item
    logs back in with pyCOMPS from inside the worker (``interop/idmtools_as_comps.py``)."""
    if importlib.util.find_spec("idmtools_platform_comps") is None:
        pytest.skip("idmtools is in the 'interop' extra")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "idmtools.ini").write_text(
        f"[OFFLINE]\ntype = COMPS\nendpoint = {local.url}\nenvironment = Calculon\n"
    )
    login(local.url, USER, PASSWORD, client_env)
    done = subprocess.run(
        [sys.executable, str(HERE / "interop" / "idmtools_as_comps.py"), "OFFLINE"],
        cwd=cwd,
        env=client_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["succeeded"] is True
    assert [s["argv"] for s in got["seen"]] == [["10000", "10", "100", "1234"]] * 3
    assert {s["env"]["MY_SETTING"] for s in got["seen"]} == {"from the work order"}
    assert {s["env"]["COMPS_SERVER"] for s in got["seen"]} == {local.url}
    assert {s["env"]["COMPS_ENVIRONMENT"] for s in got["seen"]} == {"Calculon"}
    assert got["tags"]["KeyOnly"] == ""
    assert got["work_item"] == "Succeeded" and got["me"] == {"name": "logs back in"}
    configs = query(
        local.data_dir, "SELECT configuration FROM entities WHERE id = ?", got["experiment"]
    )
    assert "ExecutablePath" not in json.loads(str(configs[0][0]))  # scheduling cleared it
    states = query(
        local.data_dir,
        "SELECT state, COUNT(*) FROM entities WHERE parent_id = ? GROUP BY state",
        got["experiment"],
    )
    assert states == [("Succeeded", 3)]
