"""Benchmarks cannot rot silently: each runs here at a tiny size and must print its figures.
(The figures themselves are for RESULTS.md, never asserted in tests.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
# One profile for the slow ones (the client code is the same under both; both doubled their time).
TINY = {
    "bench_server.py": ["--gets", "40", "--batches", "2"],
    "bench_transport.py": ["--requests", "30"],
    "bench_save.py": ["--sims", "40", "--repeat", "1"],
    "bench_wait.py": ["--sims", "20"],
    "bench_upload.py": ["--big-mib", "11", "--small", "6", "--small-kib", "4"],
    "bench_harvest.py": ["--sims", "3", "--big-gib", "0.01", "--profile", "loopback"],
    "bench_analyze.py": ["--sims", "4", "--profile", "loopback"],
    "bench_idmtools.py": ["--sims", "4", "--profile", "wan"],
    "bench_scale.py": ["--sizes", "300"],
}


def test_every_benchmark_is_covered() -> None:
    assert {p.name for p in BENCHMARKS.glob("bench_*.py")} == set(TINY)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TINY))
def test_the_benchmark_runs_at_a_tiny_size(script: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, script, *TINY[script]],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    assert figures["benchmark"] and len(figures) > 2
