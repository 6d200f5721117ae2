"""Outputs: listing, reads, tail, downloads (resume, ranges, checksums), harvest, zip, safety."""

from __future__ import annotations

import gc
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import httpx
import pytest
import respx

import comps_async as ca
from comps_async._transfer.paths import extract_zip_safely
from comps_async.local import FaultConfig, LocalComps
from comps_async.pipeline import CallNext

from helpers import submit

pytestmark = pytest.mark.anyio

# Writes a UTF-8 stdout, a 300 KB binary file and the SIR chart.
WORKLOAD = (
    "-c \"import os, sys; os.makedirs('output', exist_ok=True); "
    "open('output/big.bin', 'wb').write(bytes(range(256)) * 1200); "
    "sys.stdout.buffer.write(('caf\\u00e9 \\u2713 ' * 200).encode()); "
    "import runpy; sys.argv = ['sir', '--config', 'config.json']; "
    "runpy.run_module('comps_async.local.sir', run_name='__main__')\""
)


async def run_simulations(session: ca.Session, count: int) -> list[ca.Simulation]:
    experiment, sims = await submit(session, count, WORKLOAD, "outputs")
    final = await session.wait(experiment_id=experiment, timeout=60)
    assert final.succeeded == count
    return sims


@pytest.fixture(scope="module")
def finished(comps_server: LocalComps) -> dict[str, object]:
    """Two simulations of WORKLOAD that have run, shared by the tests of this module."""

    async def setup() -> list[ca.Simulation]:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            return await run_simulations(s, 2)

    sims = anyio.run(setup)
    return {"sims": sims, "experiment": sims[0].experiment_id}


class Recorder:
    """A policy that records (method, path, Range) of every attempt."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        self.calls.append((request.method, request.url.path, request.headers.get("range")))
        return await call_next(request)


@pytest.fixture
async def recorded(
    server: LocalComps, tmp_path: Path
) -> AsyncIterator[tuple[ca.Session, Recorder]]:
    recorder = Recorder()
    settings = ca.DownloadSettings(
        range_bytes=64_000, parallel_threshold_bytes=200_000, max_attempts=1
    )
    async with ca.Session(
        server.url,
        token=server.token,
        policies=[recorder],
        token_cache_dir=tmp_path,
        download=settings,
    ) as s:
        yield s, recorder


async def test_info_read_ranges_and_tail(finished: dict[str, object], session: ca.Session) -> None:
    sim = finished["sims"][0]  # type: ignore[index]
    listing = await session.outputs.info(sim)
    assert {
        "stdout.txt",
        "stderr.txt",
        "config.json",
        "output/InsetChart.json",
        "output/big.bin",
    } <= set(listing)
    chart = listing["output/InsetChart.json"]
    assert chart.path_from_root == "output" and chart.length and chart.md5
    only = await session.outputs.info(sim, ["OUTPUT/insetchart.JSON"])  # pyCOMPS case rule
    assert only["OUTPUT/insetchart.JSON"].id == chart.id
    whole = await session.outputs.read(sim, "output/InsetChart.json")
    assert len(whole) == chart.length and hashlib.md5(whole).hexdigest() == chart.md5
    assert len(json.loads(whole)["Channels"]["Infected"]["Data"]) == 3616
    assert await session.outputs.read_range(sim, "output/InsetChart.json", 5, 14) == whole[5:15]
    assert await session.outputs.read_range(sim, "output/InsetChart.json", 100) == whole[100:]
    assert await session.outputs.read_range(sim, "output/InsetChart.json", -9) == whole[-9:]
    stdout = (await session.outputs.read(sim, "stdout.txt")).decode()
    for nbytes in (1, 2, 5, 7, 50):  # cut points inside multi-byte characters decode cleanly
        tail = await session.outputs.tail(sim, "stdout.txt", nbytes)
        assert "\ufffd" not in tail and stdout.endswith(tail) and len(tail.encode()) <= nbytes
    with pytest.raises(ca.NotFoundError):
        await session.outputs.info(sim, ["nope.txt"])
    with pytest.raises(ValueError, match="no HPC jobs"):
        await session.outputs.info(ca.WorkItem(id=uuid4()), hpc_job=uuid4())
    with pytest.raises(TypeError, match="not Experiments"):
        await session.outputs.info(ca.Experiment(id=uuid4()))


async def test_download_skips_resumes_and_splits(
    finished: dict[str, object],
    server: LocalComps,
    recorded: tuple[ca.Session, Recorder],
    tmp_path: Path,
) -> None:
    session, recorder = recorded
    sim = finished["sims"][0]  # type: ignore[index]
    dest = tmp_path / "dl"
    paths = await session.outputs.download(sim, ["output/big.bin", "stdout.txt"], dest)
    assert paths == [dest / "output/big.bin", dest / "stdout.txt"]
    assert (dest / "output/big.bin").read_bytes() == bytes(range(256)) * 1200
    ranges = [r for m, p, r in recorder.calls if p.endswith("big.bin")]
    assert len(ranges) == 5 and all(r and r.startswith("bytes=") for r in ranges)  # 307200/64000
    recorder.calls.clear()
    await session.outputs.download(sim, ["output/big.bin", "stdout.txt"], dest)
    assert not [c for c in recorder.calls if "/asset/download/" in c[1]]  # complete: skipped
    await session.outputs.download(sim, ["stdout.txt"], dest, overwrite=True)
    assert [c for c in recorder.calls if c[1].endswith("stdout.txt")]

    # An interrupted sequential download keeps its scratch file and the next call resumes it.
    server.faults.configure(FaultConfig(truncate_rate=1.0, routes=r"GET /asset/download/"))
    scratch = dest / ".comps-partial"
    for _ in range(10):  # aiohttp drops bytes that arrive together with the reset: try again
        with pytest.raises(ca.TransferError):
            await session.outputs.download(sim, ["output/InsetChart.json"], dest)
        (part,) = scratch.glob("*.part")
        if (have := part.stat().st_size) > 0:
            break
    assert have > 0
    server.faults.configure(FaultConfig())
    recorder.calls.clear()
    (target,) = await session.outputs.download(sim, ["output/InsetChart.json"], dest)
    resumed = [r for _, p, r in recorder.calls if p.endswith("InsetChart.json")]
    assert resumed == [f"bytes={have}-"]  # only the rest was asked for
    assert target.read_bytes() == await session.outputs.read(sim, "output/InsetChart.json")
    assert not part.exists()


async def test_harvest_streams_results_and_reports_failures(
    finished: dict[str, object], session: ca.Session, tmp_path: Path
) -> None:
    experiment = finished["experiment"]
    dest = tmp_path / "harvest"
    results = [
        r
        async for r in session.outputs.harvest(
            experiment, ["output/*.json", "STDOUT.TXT"], dest, concurrency=4
        )
    ]  # type: ignore[arg-type]
    assert all(r.ok for r in results) and len(results) == 4
    for result in results:
        assert result.local_path == dest / str(result.simulation_id) / str(result.path)
        assert result.local_path.stat().st_size == result.size
    again = [r async for r in session.outputs.harvest(experiment, ["output/*.json"], dest)]  # type: ignore[arg-type]
    assert len(again) == 2 and all(r.skipped for r in again)
    ghost = ca.Simulation(id=uuid4(), state=ca.SimulationState.Succeeded)
    sims = [*finished["sims"], ghost]  # type: ignore[misc]
    harvest = session.outputs.harvest(sims, ["stdout.txt"], dest)
    mixed = [r async for r in harvest]
    # What a progress bar's total reads: every simulation listed (the ghost too), 2 files.
    assert (harvest.simulations_listed, harvest.files_matched) == (3, 2)
    failed = [r for r in mixed if not r.ok]
    assert [r.simulation_id for r in failed] == [ghost.id]
    assert isinstance(failed[0].error, ca.NotFoundError)
    assert sum(r.ok for r in mixed) == 2  # the others were not stopped by it


async def test_zip_and_safe_extraction(
    finished: dict[str, object], session: ca.Session, tmp_path: Path
) -> None:
    sim = finished["sims"][1]  # type: ignore[index]
    archive = await session.outputs.zip(
        sim,
        ["output/InsetChart.json", "stdout.txt"],
        tmp_path / "out.zip",
        extract_to=tmp_path / "x",
    )
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == ["output/InsetChart.json", "stdout.txt"]
    assert (tmp_path / "x" / "stdout.txt").read_bytes() == await session.outputs.read(
        sim, "stdout.txt"
    )
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("fine.txt", "ok")
        zipped.writestr("../../escaped.txt", "pwned")
    with pytest.raises(ca.UnsafePathError):
        extract_zip_safely(evil, tmp_path / "safe")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "safe" / "fine.txt").exists()


HOST = "http://hostile.test"
SIM = UUID("dfc932fb-6c79-ec11-a9f2-9440c9be2c51")


def listing(*resources: dict[str, object]) -> dict[str, object]:
    base = {
        "Id": str(uuid4()),
        "Length": 4,
        "MimeType": "text/plain",
        "Url": f"{HOST}/asset/download/x/file",
    }
    return {"Resources": [{**base, **r} for r in resources]}


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[tuple[ca.Session, respx.MockRouter]]:
    with respx.mock(base_url=HOST, assert_all_called=False) as router:
        async with ca.Session(
            HOST, token="t", transport=httpx.AsyncHTTPTransport(), token_cache_dir=tmp_path
        ) as s:
            yield s, router


@pytest.mark.parametrize(
    "resource",
    [
        {"FriendlyName": "passwd", "PathFromRoot": "../../etc"},
        {"FriendlyName": "x", "PathFromRoot": "/abs/dir"},
        {"FriendlyName": "x", "PathFromRoot": "C:\\\\Windows"},
        {"FriendlyName": "..", "PathFromRoot": "."},
    ],
)
async def test_hostile_paths_never_leave_dest(
    hostile: tuple[ca.Session, respx.MockRouter], tmp_path: Path, resource: dict[str, object]
) -> None:
    session, router = hostile
    router.get(f"/asset/Simulations/{SIM}/Output").respond(json=listing(resource))
    router.get("/asset/download/x/file").respond(content=b"evil")
    dest = tmp_path / "dest"
    with pytest.raises(ca.UnsafePathError):
        await session.outputs.download(SIM, None, dest)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


async def test_checksum_mismatch_and_case_collisions(
    hostile: tuple[ca.Session, respx.MockRouter], tmp_path: Path
) -> None:
    session, router = hostile
    router.get(f"/asset/Simulations/{SIM}/Output").respond(
        json=listing(
            {
                "FriendlyName": "Out.txt",
                "PathFromRoot": ".",
                "MD5": hashlib.md5(b"good").hexdigest(),
            },
            {"FriendlyName": "out.txt", "PathFromRoot": "."},
        )
    )
    router.get("/asset/download/x/file").respond(content=b"bad!")
    both = await session.outputs.info(SIM)
    assert sorted(both) == ["Out.txt", "out.txt"]  # nothing lost to case folding
    with pytest.raises(ValueError, match="differ only by case"):
        await session.outputs.info(SIM, ["OUT.TXT"])
    with pytest.raises(ca.ChecksumMismatchError, match="md5"):
        await session.outputs.download(SIM, ["Out.txt"], tmp_path)
    assert not (tmp_path / "Out.txt").exists()
    assert not list((tmp_path / ".comps-partial").iterdir())  # bad bytes are not kept


async def test_zip_limit_is_checked_before_asking(
    hostile: tuple[ca.Session, respx.MockRouter], tmp_path: Path
) -> None:
    session, router = hostile
    router.get(f"/asset/Simulations/{SIM}/Output").respond(
        json=listing({"FriendlyName": "huge.bin", "PathFromRoot": ".", "Length": (1 << 30) + 1})
    )
    zip_route = router.post(f"/asset/Simulations/{SIM}/Output")
    with pytest.raises(ValueError, match="1 GiB"):
        await session.outputs.zip(SIM, None, tmp_path / "z.zip")
    assert not zip_route.called


def test_zip_bytes_helper_roundtrip(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("a/b.txt", "x")
    (tmp_path / "ok.zip").write_bytes(buffer.getvalue())
    assert extract_zip_safely(tmp_path / "ok.zip", tmp_path / "out") == [tmp_path / "out/a/b.txt"]


async def test_stopping_a_harvest_early_cancels_its_work(
    finished: dict[str, object], server: LocalComps, session: ca.Session, tmp_path: Path
) -> None:
    experiment = finished["experiment"]
    assert await session.environments() == ["Local"]  # the session's own tasks, if any, start
    idle = {task.id for task in anyio.get_running_tasks()}
    async with session.outputs.harvest(
        experiment,  # type: ignore[arg-type]
        ["output/*", "*.txt"],
        tmp_path,
        concurrency=1,
    ) as results:
        async for first in results:
            assert first.ok
            break
    # No task of the harvest outlives it (so no download can start after the close), and the
    # session is still usable.
    left = [t.name for t in anyio.get_running_tasks() if t.id not in idle]
    assert left == []
    before = sum(n for k, n in server.faults.counters.items() if "/asset/download/" in k)
    assert await session.environments() == ["Local"]
    after = sum(n for k, n in server.faults.counters.items() if "/asset/download/" in k)
    assert after == before


class Listings:
    """A policy that records output listings and downloads in flight: the most listings at
    once, the listings in flight as each listing starts, and whether a listing ever ran while
    a download did."""

    def __init__(self) -> None:
        self.listing = self.downloading = self.peak = 0
        self.at_start: list[int] = []
        self.overlapped = False

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        path = request.url.path
        listing, download = path.endswith("/Output"), path.startswith("/asset/download/")
        self.listing += listing
        self.downloading += download
        if listing:
            self.at_start.append(self.listing)
            self.peak = max(self.peak, self.listing)
        self.overlapped |= self.listing > 0 and self.downloading > 0
        try:
            return await call_next(request)
        finally:
            self.listing -= listing
            self.downloading -= download


async def test_harvest_lists_ahead_of_its_downloads(
    finished: dict[str, object], server: LocalComps, tmp_path: Path
) -> None:
    """One file at a time, and still the next simulation is listed while a file downloads: a
    download never waits for a listing's round trip."""
    seen = Listings()
    async with ca.Session(
        server.url, token=server.token, policies=[seen], token_cache_dir=tmp_path
    ) as s:
        server.faults.configure(latency_s=0.05, routes=r"GET /asset/")
        async with s.outputs.harvest(
            finished["sims"],  # type: ignore[arg-type]
            ["output/*", "*.txt"],
            tmp_path / "out",
            concurrency=1,
        ) as results:
            got = [r async for r in results]
    assert got and all(r.ok for r in got)
    assert seen.overlapped


async def test_listings_ahead_grow_while_they_list_faster(
    finished: dict[str, object], server: LocalComps, tmp_path: Path
) -> None:
    """Listings start at a quarter of ``concurrency`` and more run at once while that lists
    faster (AdaptiveLimit): a far server gets many, a near one is not flooded."""
    sim = finished["sims"][0]  # type: ignore[index]
    seen = Listings()
    async with ca.Session(
        server.url, token=server.token, policies=[seen], token_cache_dir=tmp_path
    ) as s:
        server.faults.configure(latency_s=0.05, routes=r"GET /asset/Simulations/")
        # The same simulation 400 times, no file matched: listings only.
        async with s.outputs.harvest([sim] * 400, ["nothing/*"], tmp_path, concurrency=32) as r:
            assert [x async for x in r] == []
            assert r.simulations_listed == 400
    assert max(seen.at_start[:40]) <= 8  # a quarter of 32 at first
    assert seen.peak > 8  # then more, as throughput grew


# Ours must not warn. httpx's and httpcore's own generator chain (a body cancelled mid-download
# under trio) is theirs: closing the response closes the connection, not their generators.
@pytest.mark.filterwarnings(
    "error::ResourceWarning", "ignore:Async generator 'http(x|core)\\._:ResourceWarning"
)
async def test_breaking_out_of_a_harvest_without_its_context_manager_releases_everything(
    finished: dict[str, object], session: ca.Session, tmp_path: Path
) -> None:
    """``async for ... break`` straight over ``harvest()`` (no ``async with``): once the
    iteration is dropped, its work stops and no stream is left unclosed (a ResourceWarning
    would fail a user's suite under ``-W error``)."""
    idle = {task.id for task in anyio.get_running_tasks()}
    async for got in session.outputs.harvest(
        finished["experiment"],  # type: ignore[arg-type]
        ["output/*", "*.txt"],
        tmp_path,
        concurrency=1,
    ):
        assert got.ok
        break
    gc.collect()  # the abandoned iteration is finalized...
    with anyio.fail_after(10):  # ...and its work stops (polled with a deadline)
        while [t for t in anyio.get_running_tasks() if t.id not in idle]:
            await anyio.sleep(0.01)
    gc.collect()
    assert await session.environments() == ["Local"]


async def test_a_symlink_in_dest_cannot_lead_outside(
    finished: dict[str, object], session: ca.Session, tmp_path: Path
) -> None:
    sim = finished["sims"][0]  # type: ignore[index]
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "output").symlink_to(outside)  # planted before the download
    with pytest.raises(ca.UnsafePathError):
        await session.outputs.download(sim, ["output/InsetChart.json"], dest)
    assert list(outside.iterdir()) == []
