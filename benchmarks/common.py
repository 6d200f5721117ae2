"""Shared helpers: a local COMPS server in its own process, timing, peak RSS, JSON output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from comps_async.local import FaultConfig, LocalCompsProcess

# Where benchmarks run (issue 19): loopback (as fast as this machine goes, plus whatever latency
# a benchmark adds of its own) and a COMPS far away (FaultConfig.wan(): 80 ms per request,
# 20 MB/s per connection each way, 200 MB/s for the whole link).
PROFILES = ("loopback", "wan")
SAMPLE_S = 0.1  # RSS sampling period (10 Hz: a steady workload's peak is still caught)
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@contextmanager
def server_process(*extra: str) -> Iterator[LocalCompsProcess]:
    """``comps-async serve`` in a child process (so it does not share our GIL), on a fresh
    data directory that is removed afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="comps-bench-") as data_dir,
        LocalCompsProcess(data_dir, extra_args=extra) as server,
    ):
        yield server


def add_profile_argument(parser: argparse.ArgumentParser) -> None:
    """``--profile loopback|wan|both`` (default both, reported side by side)."""
    parser.add_argument("--profile", choices=[*PROFILES, "both"], default="both")


def chosen_profiles(args: argparse.Namespace) -> list[str]:
    """The profiles ``--profile`` asks for."""
    return list(PROFILES) if args.profile == "both" else [args.profile]


def apply_profile(url: str, token: str, profile: str, loopback_latency_s: float = 0.0) -> None:
    """Switch the server's link emulation to ``profile`` (through its own fault knobs)."""
    config = FaultConfig.wan() if profile == "wan" else FaultConfig(latency_s=loopback_latency_s)
    response = httpx.put(
        f"{url}/api/_local/faults",
        headers={"X-COMPS-Token": token},
        json={k: v for k, v in dataclasses.asdict(config).items() if v is not None},
    )
    response.raise_for_status()


def wan_scaled(profile: str, count: int) -> int:
    """Fewer round trips at the WAN profile (80 ms each), for per-request figures that need
    many requests only on loopback."""
    return count if profile != "wan" else max(1, count // 10)


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run ``script --child ARGS`` in a fresh process (so that its peak RSS is its own) and
    return the JSON figures it prints last."""
    out = subprocess.run(
        [sys.executable, script, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(script).parent,
    )
    figures: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return figures


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


class TreeRss:
    """Peak RSS of this process and all its descendants, sampled from /proc."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak_kb = max(self.peak_kb, _tree_rss_kb(os.getpid()))

    @property
    def peak_mb(self) -> float:
        return round(self.peak_kb / 1024, 1)


def _tree_rss_kb(root: int) -> int:
    """RSS of ``root`` and its descendants, from /proc/<pid>/stat (cheap: the sampler runs in
    the measured process and must not compete with it for the GIL)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * PAGE_KB
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid and c not in tree]
        tree.update(children)
        frontier += children
    return sum(rss.get(pid, 0) for pid in tree)
