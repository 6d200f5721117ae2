"""Shared helpers: a local COMPS server in its own process, timing, peak RSS, JSON output."""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from comps_async.local import LocalCompsProcess


@contextmanager
def server_process(*extra: str) -> Iterator[LocalCompsProcess]:
    """``comps-async serve`` in a child process (so it does not share our GIL), on a fresh
    data directory that is removed afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="comps-bench-") as data_dir,
        LocalCompsProcess(data_dir, extra_args=extra) as server,
    ):
        yield server


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
