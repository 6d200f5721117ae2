"""The comps-async command line, run as a real subprocess."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def test_serve_prints_url_and_token_and_serves(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comps_async.cli",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--port",
            "0",
            "--user",
            "alice:wonder",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any(line.startswith("token: ") for line in lines):
            assert time.monotonic() < deadline, lines
            lines.append(process.stdout.readline())
        url = re.search(r"server at (http://127\.0\.0\.1:\d+)", "".join(lines))
        assert url is not None
        assert any("password (shown once)" in line for line in lines)
        token = next(line for line in lines if line.startswith("token: ")).split()[1]
        response = httpx.get(f"{url.group(1)}/api/Suites", headers={"X-COMPS-Token": token})
        assert response.status_code == 200 and response.json() == {"Suites": []}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    assert process.returncode == 0
    assert (tmp_path / "comps.sqlite3").exists() and (tmp_path / "users.json").exists()


def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "comps_async.cli",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--user",
            "no-colon",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "NAME:PASSWORD" in result.stderr and "Traceback" not in result.stderr
