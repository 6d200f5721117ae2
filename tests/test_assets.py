"""Asset collections: md5 off the loop with a fingerprint cache, missing-only uploads, resumable
chunked uploads, bad input, downloads and zips."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest

import comps_async as ca
from comps_async._transfer.fingerprints import FingerprintCache, _digest
from comps_async.local import Compat, LocalComps
from comps_async.pipeline import CallNext

from helpers import PeakInFlight

pytestmark = pytest.mark.anyio

SMALL_UPLOADS = ca.UploadSettings(
    large_file_bytes=100_000, chunk_bytes=64_000, budget_bytes=256_000
)


def md5_of(path: Path) -> UUID:
    return UUID(hashlib.md5(path.read_bytes()).hexdigest())


def make_tree(root: Path) -> dict[str, bytes]:
    """A small input directory with a sub-directory, a large file and a log to leave out."""
    unique = f"# {uuid4()}\n".encode()  # new content each run: the server starts without it
    contents = {
        "model.py": b"print('sir')\n" + unique,
        "config.json": (Path(__file__).parent / "fixtures" / "config.json").read_bytes() + unique,
        "data/demographics.json": b'{"Nodes": []}' + unique,
        "data/big.bin": os.urandom(300_000),
    }
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "idmtools.log").write_text("noise")
    return contents


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        self.calls.append((request.method, request.url.path, request.headers.get("content-range")))
        return await call_next(request)

    def uploads(self) -> list[tuple[str, str, str | None]]:
        return [c for c in self.calls if c[1].startswith("/api/upload/") and c[0] == "POST"]


@pytest.fixture
async def recorded(
    server: LocalComps, tmp_path: Path
) -> AsyncIterator[tuple[ca.Session, Recorder]]:
    recorder = Recorder()
    async with ca.Session(
        server.url,
        token=server.token,
        policies=[recorder],
        token_cache_dir=tmp_path,
        upload=SMALL_UPLOADS,
    ) as s:
        yield s, recorder


def test_fingerprint_cache_skips_md5_but_catches_in_place_edits(tmp_path: Path) -> None:
    cache = FingerprintCache(tmp_path / "fp.sqlite3")
    path = tmp_path / "input.bin"
    path.write_bytes(b"a" * 10_000)
    first = _digest(path, cache)
    assert first.md5_computed and first.md5 == md5_of(path)
    again = _digest(path, cache)
    assert not again.md5_computed and again.md5 == first.md5  # md5 skipped on the re-run
    stat = path.stat()
    path.write_bytes(b"b" * 10_000)  # same size ...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and the same mtime
    assert path.stat().st_mtime_ns == stat.st_mtime_ns
    edited = _digest(path, cache)
    assert edited.md5_computed and edited.md5 == md5_of(path) != first.md5
    cache.close()


async def test_create_from_dir_uploads_only_what_is_missing(
    recorded: tuple[ca.Session, Recorder], server: LocalComps, tmp_path: Path
) -> None:
    session, recorder = recorded
    contents = make_tree(tmp_path / "inputs")
    progress: list[tuple[int, int]] = []
    collection = await session.asset_collections.create_from_dir(
        tmp_path / "inputs",
        tags={"Name": "inputs"},
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert collection.id is not None
    assert sorted(a.path_in_collection for a in collection.assets or []) == sorted(contents)
    total = sum(len(v) for v in contents.values())
    assert progress[-1] == (total, total)  # bytes, not files
    chunks = recorder.uploads()
    assert [c[2] for c in chunks] == [
        "bytes 0-63999/300000",
        "bytes 64000-127999/300000",
        "bytes 128000-191999/300000",
        "bytes 192000-255999/300000",
        "bytes 256000-299999/300000",
    ]
    fetched = await session.asset_collections.get(collection.id, children=["assets", "tags"])
    assert (fetched.tags or {})["Name"] == "inputs"
    by_path = {a.path_in_collection: a for a in fetched.assets or []}
    for name, data in contents.items():
        assert by_path[name].md5_checksum == UUID(hashlib.md5(data).hexdigest())
        assert server.blobs.path(by_path[name].md5_checksum).read_bytes() == data

    recorder.calls.clear()
    again = await session.asset_collections.create_from_dir(tmp_path / "inputs")
    assert again.id is not None and again.id != collection.id
    # Zero bytes: one md5-only save, plus a check of the large file (made while hashing).
    posts = [c[:2] for c in recorder.calls if c[0] == "POST"]
    assert posts == [("POST", "/api/AssetCollections")]
    assert [c[1].rsplit("/", 1)[0] for c in recorder.calls if c[0] == "GET"] == [
        "/api/upload/check"
    ]


async def test_interrupted_upload_resumes_from_the_server_size(
    server: LocalComps, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))

    class KillAfterTwoChunks:
        def __init__(self) -> None:
            self.chunks = 0

        async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
            if request.method == "POST" and request.url.path.startswith("/api/upload/"):
                self.chunks += 1
                if self.chunks > 2:
                    raise httpx.ReadError("connection killed", request=request)
            return await call_next(request)

    retry = ca.RetryPolicy(max_attempts=2, backoff_base_s=0.001)
    async with ca.Session(
        server.url,
        token=server.token,
        policies=[KillAfterTwoChunks()],
        retry=retry,
        upload=SMALL_UPLOADS,
        token_cache_dir=tmp_path,
    ) as s:
        with pytest.raises(ca.TransferError):
            await s.asset_collections.create([ca.AssetCollectionFile.from_path(big)])
    recorder = Recorder()
    async with ca.Session(
        server.url,
        token=server.token,
        policies=[recorder],
        upload=SMALL_UPLOADS,
        token_cache_dir=tmp_path,
    ) as s:
        collection = await s.asset_collections.create([ca.AssetCollectionFile.from_path(big)])
    assert collection.id is not None
    assert [c[2] for c in recorder.uploads()] == [
        "bytes 128000-191999/300000",
        "bytes 192000-255999/300000",
        "bytes 256000-299999/300000",
    ]
    assert server.blobs.path(md5_of(big)).read_bytes() == big.read_bytes()


async def test_md5_only_file_the_server_lacks(recorded: tuple[ca.Session, Recorder]) -> None:
    session, recorder = recorded
    ghost = uuid4()
    files = [
        ca.AssetCollectionFile.from_md5("ghost.bin", ghost, relative_path="lib"),
        ca.AssetCollectionFile.from_bytes("ok.txt", b"ok"),
    ]
    with pytest.raises(ca.MissingAssetsError) as caught:
        await session.asset_collections.create(files)
    assert caught.value.md5s == [ghost] and "lib/ghost.bin" in str(caught.value)
    assert not recorder.uploads()


async def test_bad_input_is_refused_before_sending(
    recorded: tuple[ca.Session, Recorder], tmp_path: Path
) -> None:
    session, recorder = recorded
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "a.txt").write_text("a")
    cases: list[tuple[list[ca.AssetCollectionFile], type[Exception], str]] = [
        (
            [ca.AssetCollectionFile.from_path(tmp_path / "missing.txt")],
            FileNotFoundError,
            "does not exist",
        ),
        ([ca.AssetCollectionFile.from_path(tmp_path)], IsADirectoryError, "is a directory"),
        ([ca.AssetCollectionFile.from_path(tmp_path / "loop_a")], OSError, "cannot read"),
        (
            [
                ca.AssetCollectionFile.from_path(tmp_path / "a.txt"),
                ca.AssetCollectionFile.from_bytes("A.TXT", b"x"),
            ],
            ValueError,
            "two files",
        ),
        ([], ValueError, "at least one file"),
    ]
    for files, error, message in cases:
        with pytest.raises(error, match=message):
            await session.asset_collections.create(files)
    with pytest.raises(NotADirectoryError):
        await session.asset_collections.create_from_dir(tmp_path / "a.txt")
    assert recorder.calls == []


async def test_a_file_changed_while_uploading_registers_nothing(
    server: LocalComps, tmp_path: Path
) -> None:
    big = tmp_path / "moving.bin"
    big.write_bytes(os.urandom(300_000))

    class ChangeFileOnCheck:
        async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
            if request.url.path.startswith("/api/upload/check/"):
                big.write_bytes(os.urandom(300_000))  # someone rewrites it mid-operation
            return await call_next(request)

    tag = str(uuid4())
    async with ca.Session(
        server.url,
        token=server.token,
        policies=[ChangeFileOnCheck()],
        upload=SMALL_UPLOADS,
        token_cache_dir=tmp_path,
    ) as s:
        with pytest.raises(ca.ChecksumMismatchError, match="changed while uploading"):
            await s.asset_collections.create(
                [ca.AssetCollectionFile.from_path(big)], tags={"run": tag}
            )
        assert await s.asset_collections.count(ca.Query().where_tag([f"run={tag}"])) == 0


async def test_download_and_zip_a_collection(
    recorded: tuple[ca.Session, Recorder], tmp_path: Path
) -> None:
    session, _ = recorded
    contents = make_tree(tmp_path / "inputs")
    collection = await session.asset_collections.create_from_dir(tmp_path / "inputs")
    assert collection.id is not None
    paths = await session.asset_collections.download(collection, tmp_path / "copy")
    assert sorted(p.relative_to(tmp_path / "copy").as_posix() for p in paths) == sorted(contents)
    for name, data in contents.items():
        assert (tmp_path / "copy" / name).read_bytes() == data
    one = await session.asset_collections.download(
        collection.id, tmp_path / "one", paths=["data/big.bin"]
    )
    assert one == [tmp_path / "one" / "data" / "big.bin"]
    with pytest.raises(ValueError, match="not in the collection"):
        await session.asset_collections.download(collection, tmp_path / "x", paths=["nope"])
    archive = await session.asset_collections.zip(
        collection, tmp_path / "ac.zip", extract_to=tmp_path / "unzipped"
    )
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == sorted(contents)
    assert (tmp_path / "unzipped" / "data" / "big.bin").read_bytes() == contents["data/big.bin"]


async def test_simulations_use_the_collection(
    session: ca.Session, experiment: ca.Experiment, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "campaign.json").write_bytes(
        (Path(__file__).parent / "fixtures" / "campaign.json").read_bytes()
    )
    collection = await session.asset_collections.create_from_dir(tmp_path / "in")
    config = (Path(__file__).parent / "fixtures" / "config.json").read_bytes()
    sim = ca.Simulation(
        name="with-assets",
        experiment_id=experiment.id,
        configuration=ca.Configuration(asset_collection_id=collection.id),
        files=[ca.SimulationFile.from_bytes("config.json", config)],
    )
    await session.simulations.save(sim)
    await session.simulations.commission(sim)
    await session.wait(simulation_ids=[sim.id], timeout=60)
    listing = await session.outputs.info(sim)
    assert "Assets/campaign.json" not in listing  # linked inputs are not outputs
    stdout = (await session.outputs.read(sim, "stdout.txt")).decode()
    assert "peak infected" in stdout


async def test_parallel_chunks_on_a_server_that_accepts_them(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(300_000))

    compat = Compat(out_of_order_chunks=True)
    settings = ca.UploadSettings(large_file_bytes=100_000, chunk_bytes=64_000, parallel_chunks=4)
    async with LocalComps(tmp_path / "server", compat=compat) as server:
        inflight = PeakInFlight(
            lambda r: r.method == "POST" and r.url.path.startswith("/api/upload/")
        )
        async with ca.Session(
            server.url,
            token=server.token,
            policies=[inflight],
            upload=settings,
            token_cache_dir=tmp_path,
        ) as s:
            server.faults.configure(latency_s=0.05, routes="POST /api/upload/")
            collection = await s.asset_collections.create([ca.AssetCollectionFile.from_path(big)])
        assert collection.id is not None and inflight.peak > 1
        assert server.blobs.path(md5_of(big)).read_bytes() == big.read_bytes()


async def test_out_of_order_chunks_on_the_local_server(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    md5 = md5_of_bytes(data)
    async with LocalComps(tmp_path / "server", compat=Compat(out_of_order_chunks=True)) as server:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"X-COMPS-Token": server.token}
        ) as http:

            async def chunk(start: int, end: int) -> httpx.Response:
                return await http.post(
                    f"/api/upload/{md5}",
                    content=data[start : end + 1],
                    headers={"Content-Range": f"bytes {start}-{end}/200000"},
                )

            assert (await chunk(100_000, 199_999)).status_code == 200  # the second half first
            check = await http.get(f"/api/upload/check/{md5}")
            assert check.status_code == 206 and check.json() == {"Size": 0}  # no prefix yet
            assert (await chunk(0, 99_999)).status_code == 200
            assert (await http.get(f"/api/upload/check/{md5}")).status_code == 200
        assert server.blobs.path(md5).read_bytes() == data


def md5_of_bytes(data: bytes) -> UUID:
    return UUID(hashlib.md5(data).hexdigest())
