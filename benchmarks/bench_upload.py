"""Upload benchmark (issues 6, 19), one run, side by side: 1 GiB made of one 512 MiB file and
1,000 files of 512 KiB, uploaded as an asset collection to a fresh local server (own process),
at two profiles: loopback, and a WAN link (80 ms, 20 MB/s per connection each way, 200 MB/s).

(a) comps_async ``create_from_dir`` (first run: empty fingerprint cache, empty server; then a
second run over the unchanged directory); (b) a pyCOMPS-style client: md5 in 8 KiB reads, whole
files in memory, the two-pass createac save with sequential file-only requests, and the big file
through sequential chunks starting at 1 MiB and doubling; (c) the limit: min(md5 throughput x
cores, raw loopback POST throughput of the server's upload route), measured in this run.

    python benchmarks/bench_upload.py [--big-mib 512] [--small 1000] [--small-kib 512]
        [--profile loopback|wan|both]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx

import comps_async as ca

from common import (
    Timer,
    add_profile_argument,
    apply_profile,
    chosen_profiles,
    peak_rss_mb,
    report,
    run_child,
    server_process,
)


def make_inputs(root: Path, big_mib: int, small: int, small_kib: int) -> int:
    (root / "small").mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(1 << 20)
    with open(root / "big.bin", "wb") as out:
        for i in range(big_mib):
            out.write(chunk[:-8] + i.to_bytes(8, "little"))
    for i in range(small):
        (root / "small" / f"f{i:04d}.bin").write_bytes(os.urandom(small_kib * 1024))
    return big_mib * (1 << 20) + small * small_kib * 1024


# --- (a) comps_async ---------------------------------------------------------------------------


async def run_sdk(url: str, token: str, inputs: Path, cache: Path) -> dict[str, Any]:
    async with ca.Session(url, token=token, fingerprint_cache=cache) as s:
        with Timer() as first:
            await s.asset_collections.create_from_dir(inputs)
        with Timer() as second:
            await s.asset_collections.create_from_dir(inputs)
    return {"first_s": first.seconds, "second_s": second.seconds, "peak_rss_MB": peak_rss_mb()}


# --- (b) pyCOMPS style -------------------------------------------------------------------------


def _md5_8k(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(8192):
            digest.update(block)
    return str(uuid.UUID(digest.hexdigest()))


def run_pycomps(url: str, token: str, inputs: Path) -> dict[str, Any]:
    headers = {"X-COMPS-Token": token, "Accept": "application/json"}
    files = sorted(p for p in inputs.rglob("*") if p.is_file())
    with Timer() as timer:
        entries = []
        for path in files:
            md5 = _md5_8k(path)
            if path.stat().st_size > 10 * 1024 * 1024:  # uploaded at add_file() time (§8.4)
                data = path.read_bytes()
                offset, size = 0, 1 << 20
                while offset < len(data):
                    started = time.perf_counter()
                    piece = data[offset : offset + size]
                    httpx.post(
                        f"{url}/api/upload/{md5}",
                        content=piece,
                        timeout=None,
                        headers={
                            **headers,
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"bytes {offset}-"
                            f"{offset + len(piece) - 1}/{len(data)}",
                        },
                    )
                    offset += len(piece)
                    if time.perf_counter() - started < 2.0:
                        size *= 2
            rel = path.parent.relative_to(inputs).as_posix()
            entries.append((path, md5, "" if rel == "." else rel))
        assets = [{"FileName": p.name, "MD5Checksum": m, "RelativePath": r} for p, m, r in entries]
        body = (
            "not_a_file",
            ("AssetCollections", json.dumps([{"Assets": assets}]).encode(), "application/json"),
        )
        answer = httpx.post(
            f"{url}/api/AssetCollections", files=[body], headers=headers, timeout=None
        )
        missing = set(answer.json().get("UntrackedIds") or [])
        todo = [(p, m) for p, m, _ in entries if m in missing]
        for start in range(0, len(todo), 100):  # file-only requests, one after the other
            parts = [
                (m, (p.name, p.read_bytes(), "application/octet-stream"))
                for p, m in todo[start : start + 100]
            ]
            httpx.post(
                f"{url}/api/AssetCollections",
                headers=headers,
                timeout=None,
                files=[("not_a_file", ("AssetCollections", b"[]", "application/json")), *parts],
            ).raise_for_status()
        httpx.post(
            f"{url}/api/AssetCollections", files=[body], headers=headers, timeout=None
        ).raise_for_status()
    return {"first_s": timer.seconds, "peak_rss_MB": peak_rss_mb()}


# --- (c) the limit -----------------------------------------------------------------------------


def md5_mb_per_s() -> float:
    data = os.urandom(256 << 20)
    with Timer() as timer:
        hashlib.md5(data).hexdigest()
    return len(data) / timer.seconds / 1e6


async def post_mb_per_s(url: str, token: str, total_mib: int = 512) -> float:
    """Raw concurrent POSTs of 8 MiB chunks to the upload route (4 files at once)."""
    chunk = os.urandom(8 << 20)
    headers = {"X-COMPS-Token": token, "Content-Type": "application/octet-stream"}
    per_file = total_mib // 4 * (1 << 20)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=None) as client:

        async def one_file() -> None:
            md5 = uuid.uuid4()  # never completes: the server only stores the ranges
            for offset in range(0, per_file, len(chunk)):
                await client.post(
                    f"/api/upload/{md5}",
                    content=chunk,
                    headers={
                        "Content-Range": f"bytes {offset}-{offset + len(chunk) - 1}/{per_file + 1}"
                    },
                )

        with Timer() as timer:
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(one_file)
    return total_mib * (1 << 20) / timer.seconds / 1e6


def child(approach: str, params: str) -> None:
    args = json.loads(params)
    inputs = Path(args["inputs"])
    if approach == "comps_async":
        figures = anyio.run(run_sdk, args["url"], args["token"], inputs, Path(args["cache"]))
    else:
        figures = run_pycomps(args["url"], args["token"], inputs)
    print(json.dumps(figures))


def measure(approach: str, inputs: Path, scratch: Path, profile: str) -> dict[str, Any]:
    with server_process() as server:  # a fresh, empty server for each approach
        apply_profile(server.url, server.token, profile)
        os.sync()  # earlier phases' dirty pages are written back now, not during this one
        params = scratch / f"{approach}.json"
        params.write_text(
            json.dumps(
                {
                    "url": server.url,
                    "token": server.token,
                    "inputs": str(inputs),
                    "cache": str(scratch / f"{uuid.uuid4()}.sqlite3"),
                }
            )
        )
        figures = run_child(__file__, approach, str(params))
        if approach == "comps_async":
            os.sync()
            figures["post_limit_MB_per_s"] = anyio.run(post_mb_per_s, server.url, server.token)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mib", type=int, default=512)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--small-kib", type=int, default=512)
    parser.add_argument("--child", nargs=2, metavar=("APPROACH", "PARAMS_FILE"))
    add_profile_argument(parser)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]).read_text())
        return
    figures: dict[str, Any] = {}
    md5_one_core = md5_mb_per_s()
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        total = make_inputs(scratch / "inputs", args.big_mib, args.small, args.small_kib)
        figures["total_MB"] = round(total / 1e6)
        figures["files"] = args.small + 1
        for profile in chosen_profiles(args):
            sdk = measure("comps_async", scratch / "inputs", scratch, profile)
            pycomps = measure("pycomps_style", scratch / "inputs", scratch, profile)
            figures[profile] = _summary(sdk, pycomps, total, args.big_mib, md5_one_core)
    report("upload", figures)


def _summary(
    sdk: dict[str, Any], pycomps: dict[str, Any], total: int, big_mib: int, md5_one_core: float
) -> dict[str, Any]:
    md5_limit = md5_one_core * (os.cpu_count() or 1)
    limit = min(md5_limit, sdk.pop("post_limit_MB_per_s"))
    mb = total / 1e6
    sdk_rate = mb / sdk["first_s"]
    # What the required protocol allows at best: no byte may be sent before the largest file's
    # md5 is known (it names the upload, §8.4, and the md5-only save needs every md5, §8.3), and
    # one file's md5 cannot be split across cores; after that everything moves at the limit.
    largest_mb = big_mib * (1 << 20) / 1e6
    bound = mb / (largest_mb / md5_one_core + mb / limit)
    return {
        "comps_async": {
            "MB_per_s": round(sdk_rate, 1),
            "first_run_s": round(sdk["first_s"], 2),
            "second_run_s": round(sdk["second_s"], 3),
            "second_run_speedup": round(sdk["first_s"] / sdk["second_s"], 1),
            "peak_rss_MB": round(sdk["peak_rss_MB"], 1),
        },
        "pycomps_style": {
            "MB_per_s": round(mb / pycomps["first_s"], 1),
            "seconds": round(pycomps["first_s"], 2),
            "peak_rss_MB": round(pycomps["peak_rss_MB"], 1),
        },
        "speedup_vs_pycomps": round(pycomps["first_s"] / sdk["first_s"], 1),
        "limit": {"MB_per_s": round(limit, 1), "md5_x_cores_MB_per_s": round(md5_limit, 1)},
        "comps_async_fraction_of_limit": round(sdk_rate / limit, 2),
        "protocol_bound": {
            "MB_per_s": round(bound, 1),
            "largest_file_md5_s": round(largest_mb / md5_one_core, 2),
            "fraction_of_limit": round(bound / limit, 2),
        },
        "comps_async_fraction_of_bound": round(sdk_rate / bound, 2),
    }


if __name__ == "__main__":
    main()
