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
