"""save_all: batching, bounded streaming, missing content, partial failure, exactly-once."""

from __future__ import annotations

import gc
import hashlib
import json
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import httpx
import pytest

import comps_async as ca
from comps_async.local import FaultConfig, LocalComps
from comps_async.pipeline import CallNext

from helpers import PeakInFlight

pytestmark = pytest.mark.anyio

CONFIG = (Path(__file__).parent / "fixtures" / "config.json").read_bytes()


def make_sims(experiment: ca.Experiment, count: int, start: int = 0) -> list[ca.Simulation]:
    shared = ca.SimulationFile.from_bytes("config.json", CONFIG)
    return [
        ca.Simulation(
            name=f"s{i}",
            experiment_id=experiment.id,
            tags={"i": i},
            files=[shared, ca.SimulationFile.from_bytes("seed.txt", str(i).encode())],
        )
        for i in range(start, start + count)
    ]


async def all_ids(session: ca.Session, experiment: ca.Experiment) -> list[UUID]:
    query = ca.Query().select(["id"]).where([f"experiment_id={experiment.id}"])
    return [s.id async for s in session.simulations.iterate(query) if s.id is not None]


async def test_batches_of_100_in_order(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment
) -> None:
    sims = make_sims(experiment, 250)
    progress: list[tuple[int, int | None]] = []
    saved = await session.simulations.save_all(
        sims, on_progress=lambda d, t: progress.append((d, t))
    )
    assert saved == 250
    assert server.faults.counters["POST /api/Simulations"] == 3
    # Batches land in any order; progress counts what has landed so far.
    assert len(progress) == 3 and progress[-1] == (250, 250)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    fetched = {s.id: s.name for s in await session.experiments.simulations(experiment)}
    assert [fetched[s.id] for s in sims] == [s.name for s in sims]  # ids in submission order


async def test_concurrent_batches_and_bounded_streaming(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment, tmp_path: Path
) -> None:
    produced = 0
    produced_at_first_landing: list[int] = []

    async def generate() -> AsyncIterator[ca.Simulation]:
        nonlocal produced
        for sim in make_sims(experiment, 1500):
            produced += 1
            yield sim

    server.faults.configure(FaultConfig(latency_s=0.05, routes="POST /api/Simulations"))
    inflight = PeakInFlight(lambda r: r.method == "POST")
    async with ca.Session(
        server.url, token=server.token, policies=[inflight], token_cache_dir=tmp_path
    ) as s:
        saved = await s.simulations.save_all(
            generate(),
            concurrency=3,
            on_progress=lambda done, total: produced_at_first_landing.append(produced),
        )
    assert saved == 1500 and len(await all_ids(session, experiment)) == 1500
    assert 1 < inflight.peak <= 3
    # Bounded channel: when the first batch landed, at most 3 in flight + 3 queued + 1 waiting
    # to be queued had been pulled from the generator, plus the chunk being prepared (whose
    # first entity closed the last one), not all 15 batches.
    assert produced_at_first_landing[0] <= 8 * 100


async def test_bulk_updates_land_once_with_only_what_changed(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment
) -> None:
    """Over HTTP to the local server: a bulk rename updates every simulation in place, adds a
    file only where one was added (COMPS appends files: none twice) and skips the unchanged."""
    sims = make_sims(experiment, 150)
    await session.simulations.save_all(sims)
    posts = server.faults.counters["POST /api/Simulations"]
    assert await session.simulations.save_all(sims) == 150  # unchanged: counted, not sent
    assert server.faults.counters["POST /api/Simulations"] == posts
    ids = [s.id for s in sims]
    for sim in sims:
        sim.name = f"{sim.name}-renamed"
    added = ca.SimulationFile.from_bytes("added.txt", b"added")
    for sim in sims[::50]:
        sim.files = [*(sim.files or []), added]
    assert await session.simulations.save_all(sims) == 150
    assert server.faults.counters["POST /api/Simulations"] == posts + 2
    assert [s.id for s in sims] == ids
    query = ca.Query().select_children(["files"])
    fetched = {s.id: s for s in await session.experiments.simulations(experiment, query)}
    assert len(fetched) == 150
    for i, sim in enumerate(sims):
        got = fetched[sim.id]
        assert got.name == f"s{i}-renamed"
        names = sorted(f.file_name for f in got.files or [])
        expected = ["added.txt"] if i % 50 == 0 else []
        assert names == sorted(["config.json", "seed.txt", *expected])
    assert added.md5_checksum is not None and server.blobs.exists(added.md5_checksum)


async def test_files_given_again_by_path_are_hashed_before_the_comparison(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment, tmp_path: Path
) -> None:
    """Saved simulations whose files are given again by path (hashed at save time: a script
    that rebuilds its inputs) are hashed, then compared with what the server holds: unchanged,
    so nothing is sent. One whose seed changed is updated, and COMPS appends the new seed."""
    sims = make_sims(experiment, 3)
    await session.simulations.save_all(sims)
    posts = server.faults.counters["POST /api/Simulations"]
    (tmp_path / "config.json").write_bytes(CONFIG)
    for i, sim in enumerate(sims):
        (tmp_path / f"seed{i}.txt").write_bytes(b"changed" if i == 2 else str(i).encode())
        sim.files = [
            ca.SimulationFile.from_path(tmp_path / "config.json"),
            ca.SimulationFile.from_path(tmp_path / f"seed{i}.txt", "seed.txt"),
        ]
    assert await session.simulations.save_all(sims[:2]) == 2
    assert server.faults.counters["POST /api/Simulations"] == posts
    assert await session.simulations.save_all(sims) == 3
    assert server.faults.counters["POST /api/Simulations"] == posts + 1
    got = await session.simulations.get(sims[2].id, children=["files"])
    assert sorted(f.file_name for f in got.files or []) == ["config.json", "seed.txt", "seed.txt"]


async def test_each_batch_carries_its_shared_content_within_the_byte_limit(
    server: LocalComps, experiment: ca.Experiment, tmp_path: Path
) -> None:
    """A batch that starts when the previous one filled up carries the shared file again, and its
    size counts it: no request goes over ``max_bytes``."""

    class Sizes:
        def __init__(self) -> None:
            self.posted: list[int] = []

        async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
            if request.method == "POST" and request.url.path.endswith("/Simulations"):
                self.posted.append(len(await request.aread()))
            return await call_next(request)

    content = bytes(range(256)) * 80  # bigger than the estimate's slack for request headers
    shared = ca.SimulationFile.from_bytes("model.bin", content)
    sims = [
        ca.Simulation(name=f"s{i}", experiment_id=experiment.id, files=[shared]) for i in range(100)
    ]
    limit = 4096 + len(content) + 600 + 30 * 260  # the request, the shared part, ~30 entities
    sizes = Sizes()
    async with ca.Session(
        server.url, token=server.token, policies=[sizes], token_cache_dir=tmp_path
    ) as s:
        assert await s.simulations.save_all(sims, limits=ca.BatchLimits(max_bytes=limit)) == 100
    assert max(sizes.posted) <= limit, (sizes.posted, limit)
    assert len(sizes.posted) >= 3  # several batches, each with the shared part
    assert all(sim.id is not None for sim in sims)


async def test_updates_fill_batches_by_their_size(
    server: LocalComps, experiment: ca.Experiment, tmp_path: Path
) -> None:
    """Updates attach no content, so their bodies' sizes alone end a batch: none goes over
    ``max_bytes``, all land, in order; one too big even alone is a typed error for it alone."""
    posted: list[list[str]] = []
    limit = 1 << 30  # (the creates: no limit of this test's)

    class Names:
        async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
            if request.method == "POST" and request.url.path.endswith("/Simulations"):
                assert len(await request.aread()) <= limit
                (part,) = [p for p in request.content.split(b"\r\n\r\n") if p.startswith(b"[")]
                rows = json.loads(part[: part.rindex(b"]") + 1])
                posted.append([row["Name"] for row in rows])
            return await call_next(request)

    sims = make_sims(experiment, 10)
    async with ca.Session(
        server.url, token=server.token, policies=[Names()], token_cache_dir=tmp_path
    ) as s:
        await s.simulations.save_all(sims)
        posted.clear()
        for sim in sims:
            sim.name = f"{sim.name}-{'x' * 300}"
        body = len(sims[0].update_json()) + 2
        limit = 4096 + 300 + 3 * body  # the request's own, its multipart framing, three bodies
        limits = ca.BatchLimits(max_bytes=limit)
        assert await s.simulations.save_all(sims, limits=limits) == 10
        assert [len(names) for names in posted] == [3, 3, 3, 1]
        assert [n for names in posted for n in names] == [sim.name for sim in sims]
        sims[4].name = "y" * limit
        posted.clear()
        with pytest.raises(ca.BatchSaveError) as caught:
            await s.simulations.save_all(sims, limits=limits)
    assert "alone is" in str(caught.value.errors[0]) and caught.value.failed == [sims[4]]
    assert caught.value.saved_count == 9 and posted == []  # the others: unchanged


async def test_batches_in_flight_grow_while_throughput_grows(
    server: LocalComps, experiment: ca.Experiment, tmp_path: Path
) -> None:
    """Far from the server (100 ms a save), more batches in flight move more: the default
    starts at pyCOMPS's 4 and grows; a given concurrency is kept as given."""
    server.faults.configure(FaultConfig(latency_s=0.1, routes="POST /api/Simulations"))
    peaks = {}
    for concurrency in (None, 4):
        posts = PeakInFlight(lambda r: r.method == "POST" and r.url.path.endswith("/Simulations"))
        async with ca.Session(
            server.url, token=server.token, policies=[posts], token_cache_dir=tmp_path
        ) as s:
            sims = [ca.Simulation(name=f"s{i}", experiment_id=experiment.id) for i in range(6000)]
            assert await s.simulations.save_all(sims, concurrency=concurrency) == 6000
        peaks[concurrency] = posts.peak
    assert peaks[4] == 4
    assert 4 < peaks[None] <= 16


async def test_md5_only_content_the_server_lacks(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment
) -> None:
    ghost = uuid4()
    sim = ca.Simulation(
        name="needs-ghost",
        experiment_id=experiment.id,
        files=[ca.SimulationFile.from_md5("input.bin", ghost)],
    )
    with pytest.raises(ca.MissingAssetsError) as caught:
        await session.simulations.save_all([sim])
    assert caught.value.md5s == [ghost]
    assert "needs-ghost/input.bin" in str(caught.value)
    assert sim.id is None and await all_ids(session, experiment) == []


async def test_large_files_go_through_chunked_upload_once(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(uuid4().bytes * 4096)  # 64 KiB, "large" under the limits below
    sims = [
        ca.Simulation(
            name=f"b{i}", experiment_id=experiment.id, files=[ca.SimulationFile.from_path(big)]
        )
        for i in range(3)
    ]
    limits = ca.BatchLimits(large_file_bytes=10_000)
    await session.simulations.save_all(sims, limits=limits)
    uploads = [k for k in server.faults.counters if k.startswith("POST /api/upload/")]
    assert len(uploads) == 1  # one file, uploaded once for three simulations
    md5 = UUID(hashlib.md5(big.read_bytes()).hexdigest())
    assert all(s.files and s.files[0].md5_checksum == md5 for s in sims)
    assert server.blobs.path(md5).read_bytes() == big.read_bytes()


async def test_bad_input_fails_before_anything_is_sent(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment, tmp_path: Path
) -> None:
    good = make_sims(experiment, 3)
    cases: list[tuple[list[ca.Simulation], type[Exception], str]] = [
        ([*good, ca.Simulation(name="orphan")], ValueError, "experiment_id"),
        ([*good, ca.Simulation(experiment_id=experiment.id)], ValueError, "no name"),
        (
            [
                ca.Simulation(
                    name="f",
                    experiment_id=experiment.id,
                    files=[ca.SimulationFile.from_path(tmp_path / "missing.json")],
                )
            ],
            FileNotFoundError,
            "does not exist",
        ),
        (
            [
                ca.Simulation(
                    name="d",
                    experiment_id=experiment.id,
                    files=[ca.SimulationFile.from_path(tmp_path)],
                )
            ],
            IsADirectoryError,
            "directory",
        ),
    ]
    for sims, error, message in cases:
        with pytest.raises(error, match=message):
            await session.simulations.save_all(sims)
    with pytest.raises(TypeError, match="expected Simulation"):
        await session.simulations.save_all([experiment])  # type: ignore[list-item]
    # Checked a batch's worth at a time, the whole list before the first request: positions
    # count from the start of the list, a file shared by all is looked at, and a bad file
    # after the first batch still stops everything.
    config = tmp_path / "config.json"
    config.write_bytes(b"{}")
    shared = ca.SimulationFile.from_path(config)
    many = [
        ca.Simulation(name=f"m{i}", experiment_id=experiment.id, files=[shared]) for i in range(250)
    ]
    with pytest.raises(ValueError, match="#250 has no name"):
        await session.simulations.save_all([*many, ca.Simulation(experiment_id=experiment.id)])
    config.unlink()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        await session.simulations.save_all(many)
    assert server.faults.counters["POST /api/Simulations"] == 0


async def test_partial_failure_reports_saved_and_failed(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment
) -> None:
    sims = make_sims(experiment, 150)
    sims[120].files = [ca.SimulationFile.from_md5("gone.bin", uuid4())]
    with pytest.raises(ca.BatchSaveError) as caught:
        await session.simulations.save_all(sims, concurrency=1)
    error = caught.value
    assert {s.name for s in error.saved} == {f"s{i}" for i in range(100)}
    assert len(error.failed) == 50 and all(s.id is None for s in error.failed)
    assert isinstance(error.errors[0], ca.MissingAssetsError)
    sims[120].files = [ca.SimulationFile.from_bytes("fixed.txt", b"ok")]
    assert await session.simulations.save_all(error.failed) == 50  # retry only the rest
    ids = await all_ids(session, experiment)
    assert len(ids) == 150 and set(ids) == {s.id for s in sims}


async def test_a_generator_is_saved_keeping_nothing_per_entity(
    session: ca.Session, experiment: ca.Experiment
) -> None:
    """What save_all keeps of a generator's entities is its batches in flight: when the last
    batch lands, the entities of the first ones are gone (a million would not fit otherwise)."""
    made: list[weakref.ref[ca.Simulation]] = []
    alive_when_done: list[int] = []

    def lazily() -> Iterator[ca.Simulation]:
        for i in range(1200):
            sim = ca.Simulation(
                name=f"s{i}",
                experiment_id=experiment.id,
                files=[ca.SimulationFile.from_bytes("seed.txt", str(i).encode())],
            )
            made.append(weakref.ref(sim))
            yield sim

    def on_progress(done: int, total: int | None) -> None:
        if done == 1200:
            gc.collect()
            alive_when_done.append(sum(ref() is not None for ref in made))

    saved = await session.simulations.save_all(lazily(), concurrency=2, on_progress=on_progress)
    assert saved == 1200
    # At most the batches in flight and queued (2 + 2 + 1 building) of 100 are still referenced.
    assert alive_when_done and alive_when_done[0] <= 500, alive_when_done


async def test_a_failing_generator_is_left_unread_and_finished_with_its_key(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment
) -> None:
    """A batch failing for good stops the reading of an iterator: the error says where; running
    the same generator again with the same key= creates exactly the ones that are missing."""
    broken = {250}
    pulled = 0
    key = f"gen-{experiment.id}"  # keys are global: each run of this test its own

    def generate() -> Iterator[ca.Simulation]:
        nonlocal pulled
        for sim in make_sims(experiment, 1000):
            if int(sim.name[1:]) in broken:  # type: ignore[index]
                sim.files = [ca.SimulationFile.from_md5("gone.bin", uuid4())]
            pulled += 1
            yield sim

    with pytest.raises(ca.BatchSaveError) as caught:
        await session.simulations.save_all(generate(), concurrency=1, key=key)
    error = caught.value
    assert error.saved == [] and error.saved_count >= 200  # the batches before the broken one
    assert error.unsent_from is not None and error.unsent_from == pulled < 1000
    assert all(s.id is None for s in error.failed)
    assert "unread from position" in str(error)
    broken.clear()
    assert await session.simulations.save_all(generate(), key=key) == 1000
    names = [
        s.name
        async for s in session.simulations.iterate(
            ca.Query().select(["name"]).where([f"experiment_id={experiment.id}"])
        )
    ]
    assert len(names) == 1000 and len(set(names)) == 1000  # each exactly once


async def test_commission_as_batches_land(session: ca.Session, experiment: ca.Experiment) -> None:
    sims = make_sims(experiment, 120)
    await session.simulations.save_all(sims, commission=True)
    stats = await session.experiments.stats(experiment)
    assert sum(stats.values()) == 120 and stats.get("Created", 0) == 0


@pytest.mark.parametrize(
    ("total", "faults"),
    [
        # The rates the issue names: 10% 503 + Retry-After, 2% resets before processing, 1%
        # resets after commit.
        (
            10_000,
            FaultConfig(
                error_503_rate=0.10,
                reset_before_rate=0.02,
                reset_after_rate=0.01,
                retry_after_s=0.01,
                routes="POST /api/Simulations",
                seed=1234,
            ),
        ),
        # Many more lost answers of committed batches, and of the reconciling GETs too.
        (
            2_000,
            FaultConfig(
                error_503_rate=0.05,
                reset_before_rate=0.05,
                reset_after_rate=0.25,
                retry_after_s=0.01,
                routes="/api/Simulations",
                seed=99,
            ),
        ),
    ],
    ids=["issue-rates", "heavy-resets"],
)
async def test_exactly_once_under_faults(tmp_path: Path, total: int, faults: FaultConfig) -> None:
    # asyncio runs over the aiohttp transport, trio over httpx's own: both must be exactly-once.
    async with LocalComps(tmp_path / "server", faults=faults) as server:
        async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
            experiment = await s.experiments.create(ca.Experiment(name="faulty"))
            shared = ca.SimulationFile.from_bytes("config.json", CONFIG)
            sims = [
                ca.Simulation(
                    name=f"s{i}", experiment_id=experiment.id, tags={"i": str(i)}, files=[shared]
                )
                for i in range(total)
            ]
            with anyio.fail_after(300):
                assert await s.simulations.save_all(sims, concurrency=8) == total
            server.faults.configure(FaultConfig())
            on_server = [
                x
                async for x in s.simulations.iterate(
                    ca.Query()
                    .select(["id"])
                    .select_children(["tags"])
                    .where([f"experiment_id={experiment.id}"])
                )
            ]
        injected = dict(server.faults.injected)
    print("injected faults:", injected)
    assert min(injected.get(k, 0) for k in ("503", "reset_before", "reset_after")) > 0
    assert len(on_server) == total  # nothing duplicated, nothing lost
    assert sorted(int((x.tags or {})["i"]) for x in on_server) == list(range(total))
    assert {x.id for x in on_server} == {sim.id for sim in sims}  # every returned id is real
    by_id = {x.id: (x.tags or {})["i"] for x in on_server}
    assert all(by_id[sim.id] == str(i) for i, sim in enumerate(sims))
