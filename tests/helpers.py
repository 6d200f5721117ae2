"""Set-up shared by test modules (plain functions: module-scoped fixtures call them too)."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio

import comps_async as ca

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``comps-async serve`` in its own process, so that a test can SIGKILL it and start it
    again on the same data directory and port."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        command = [sys.executable, "-m", "comps_async.cli", "serve"]
        self.process = subprocess.Popen(
            [*command, "--data-dir", str(self.data_dir), "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        watchdog = threading.Timer(timeout_s, self.kill)  # a hung start ends readline with EOF
        watchdog.start()
        try:
            for line in self.process.stdout:
                if line.startswith("token: "):
                    self.token = line.removeprefix("token: ").strip()
                    return self
        finally:
            watchdog.cancel()
        self.kill()
        raise RuntimeError(f"comps-async serve did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no clean-up, exactly like a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


POLL_S = 0.02


async def poll_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it holds, or fail after ``timeout_s`` (never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await anyio.sleep(POLL_S)
