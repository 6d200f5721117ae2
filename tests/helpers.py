"""Set-up shared by test modules (plain functions: module-scoped fixtures call them too)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx

import comps_async as ca
from comps_async.pipeline import CallNext

CONFIG = (Path(__file__).parent / "fixtures" / "config.json").read_bytes()


async def submit(
    session: ca.Session, count: int, args: str, name: str = "exp"
) -> tuple[ca.Experiment, list[ca.Simulation]]:
    """An experiment running ``python3 <args>`` on the local server, with ``count`` commissioned
    simulations that each carry the fixture config.json."""
    experiment = await session.experiments.create(
        ca.Experiment(
            name=name,
            configuration=ca.Configuration(
                environment_name="Local", executable_path="python3", simulation_input_args=args
            ),
        )
    )
    sims = [
        ca.Simulation(
            name=f"{name}-{i}",
            experiment_id=experiment.id,
            files=[ca.SimulationFile.from_bytes("config.json", CONFIG)],
        )
        for i in range(count)
    ]
    await session.simulations.save_all(sims, commission=True)
    return experiment, sims


def rows_by_key(data_dir: Path, kind: str = "Simulation") -> tuple[int, int]:
    """What the server's database holds, read directly: (live rows of ``kind``, distinct
    idempotency keys among them). Exactly once means both equal the number saved."""
    db = sqlite3.connect(f"file:{data_dir / 'comps.sqlite3'}?mode=ro", uri=True)
    try:
        rows, keys = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT t.value) FROM entities e LEFT JOIN tags t "
            "ON t.entity_id = e.id AND t.key = ? WHERE e.kind = ? AND e.deleted = 0",
            (ca.KEY_TAG, kind),
        ).fetchone()
    finally:
        db.close()
    return int(rows), int(keys)


POLL_S = 0.02


async def poll_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it holds, or fail after ``timeout_s`` (never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await anyio.sleep(POLL_S)


def make_token(
    user: str = "jdoe",
    lifetime: timedelta = timedelta(hours=4),
    tag: str = "sig",
    created_ago: timedelta = timedelta(0),
    kind: str = "Auth",
) -> str:
    now = datetime.now(UTC)
    fmt = "%Y-%m-%d-%H-%M-%S"
    created = (now - created_ago).strftime(fmt)
    fields = [
        "1",
        kind,
        user,
        "h",
        "",
        "h",
        (now + lifetime).strftime(fmt),
        created,
        "",
        "",
        "",
        "",
        "g",
        "Local",
        tag,
    ]
    return ",".join(fields)


def client_environment(runtime_dir: Path) -> dict[str, str]:
    """The environment of a client process (pyCOMPS, idmtools): a private runtime dir for the
    token cache they share with comps-async, and no COMPS_* variable that could redirect it."""
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPS_")}
    return env | {"XDG_RUNTIME_DIR": str(runtime_dir), "PYTHONUNBUFFERED": "1"}


def login(url: str, user: str, password: str, env: dict[str, str]) -> None:
    """``comps-async login`` in ``env``: the clients then find the token and never prompt."""
    done = subprocess.run(
        [sys.executable, "-m", "comps_async.cli", "login", "-s", url, "-u", user],
        env=env | {"COMPS_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr


class PeakInFlight:
    """A policy that records the most requests matching ``counts(request)`` in flight at once
    (what a concurrency bound promises, seen from the wire)."""

    def __init__(self, counts: Callable[[httpx.Request], bool]) -> None:
        self.counts = counts
        self.now = self.peak = 0

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        counted = self.counts(request)
        self.now += counted
        self.peak = max(self.peak, self.now)
        try:
            return await call_next(request)
        finally:
            self.now -= counted
