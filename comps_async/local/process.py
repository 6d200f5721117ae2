"""``LocalCompsProcess``: the local server in a process of its own.

For what an in-process ``LocalComps`` cannot show: a server killed with SIGKILL mid-call and
started again on the same data directory and port (crash tests), and a server that does not
share the caller's GIL (benchmarks).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Self

import httpx

from .faults import FaultConfig

__all__ = ["LocalCompsProcess"]

_START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalCompsProcess:
    """``comps-async serve`` in a child process on 127.0.0.1; use as a context manager.

    ``kill()`` is a crash (SIGKILL, no clean-up); ``start()`` again serves the same data
    directory on the same port, so a client's URL and token stay valid. ``faults`` (and
    ``configure_faults``) set the server's fault injection, again after every start.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        faults: FaultConfig | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.faults = faults
        self._extra = extra_args
        self._process: subprocess.Popen[str] | None = None

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start serving; returns once the server printed its token (it then accepts)."""
        command = [sys.executable, "-m", "comps_async.cli", "serve", "--port", str(self.port)]
        self._process = subprocess.Popen(
            [*command, "--data-dir", str(self.data_dir), *self._extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stdout is not None
        watchdog = threading.Timer(_START_TIMEOUT_S, self.kill)  # a hung start ends with EOF
        watchdog.start()
        try:
            for line in self._process.stdout:
                if line.startswith("token: "):
                    self.token = line.removeprefix("token: ").strip()
                    break
        finally:
            watchdog.cancel()
        if not self.token or not self.running:
            self.kill()
            raise RuntimeError(f"comps-async serve did not start on port {self.port}")
        if self.faults is not None:
            self.configure_faults(self.faults)
        return self

    def configure_faults(self, faults: FaultConfig) -> None:
        """Replace the server's fault settings (over HTTP, ``PUT /api/_local/faults``)."""
        self.faults = faults
        body: dict[str, Any] = dataclasses.asdict(faults)
        response = httpx.put(
            f"{self.url}/api/_local/faults", json=body, headers={"X-COMPS-Token": self.token}
        )
        response.raise_for_status()

    def kill(self) -> None:
        """SIGKILL the server, exactly like a crash, and reap it."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.wait(_START_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(_START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
