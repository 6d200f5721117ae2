"""Shared helpers: a local COMPS server in its own process, timing, peak RSS, JSON output."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class ServerProcess:
    url: str
    token: str
    process: subprocess.Popen[str]
    data_dir: str


@contextmanager
def server_process(*extra: str) -> Iterator[ServerProcess]:
    """``comps-async serve`` in a child process (so it does not share our GIL)."""
    with tempfile.TemporaryDirectory(prefix="comps-bench-") as data_dir:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "comps_async.cli",
                "serve",
                "--data-dir",
                data_dir,
                "--port",
                "0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout is not None
        url = token = None
        deadline = time.monotonic() + 30
        while (url is None or token is None) and time.monotonic() < deadline:
            line = process.stdout.readline()
            if match := re.search(r"server at (\S+)", line):
                url = match.group(1)
            if line.startswith("token: "):
                token = line.split(" ", 1)[1].strip()
        if url is None or token is None:
            process.kill()
            raise RuntimeError("the benchmark server did not start")
        try:
            yield ServerProcess(url, token, process, data_dir)
        finally:
            process.terminate()
            process.wait(10)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures as one JSON document."""
    print(json.dumps({"benchmark": name, "cpu_count": os.cpu_count(), **figures}, indent=2))


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
