"""Waiting: Stats in one request, fallbacks, adaptive intervals, timeouts."""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
import respx

import comps_async as ca
from comps_async.local import LocalComps

from helpers import submit

pytestmark = pytest.mark.anyio

FAST = ca.WaitSettings(initial_interval_s=0.05, max_interval_s=0.2)


@pytest.fixture
async def fast_session(server: LocalComps, tmp_path: Path) -> AsyncIterator[ca.Session]:
    async with ca.Session(server.url, token=server.token, wait=FAST, token_cache_dir=tmp_path) as s:
        yield s


async def test_wait_on_an_experiment_uses_stats(
    fast_session: ca.Session, server: LocalComps
) -> None:
    experiment, _ = await submit(fast_session, 4, "-m comps_async.local.sir", "wait")
    seen: list[ca.WaitStatus] = []
    server.faults.counters.clear()
    final = await fast_session.wait(experiment_id=experiment, timeout=60, on_change=seen.append)
    assert final.finished and final.succeeded == 4 and final.total == 4
    assert seen[-1] == final and len(seen) >= 1
    gets = {k: n for k, n in server.faults.counters.items() if k.startswith("GET")}
    assert set(gets) == {"GET /api/Experiments/{id}/Stats"}  # one request per poll, no listing
    assert gets["GET /api/Experiments/{id}/Stats"] == final.polls


async def test_wait_on_simulation_ids_polls_only_unfinished(
    fast_session: ca.Session, server: LocalComps, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    # The slow simulation runs until the test releases it (at most 60 s).
    hold = (
        f"import os, time\nend = time.time() + 60\n"
        f"while not os.path.exists({str(release)!r}) and time.time() < end: time.sleep(0.01)"
    )
    _, quick = await submit(fast_session, 2, "-c 'print(1)'", "wait")
    _, slow = await submit(fast_session, 1, f"-c {shlex.quote(hold)}", "wait")
    sizes: list[int] = []

    class CountIds:
        async def send(self, request: httpx.Request, call_next: ca.CallNext) -> httpx.Response:
            if "Ids" in request.url.params:
                sizes.append(len(request.url.params["Ids"].split(",")))
                if sizes[-1] == 1:  # only the unfinished one is polled now: let it finish
                    release.touch()
            return await call_next(request)

    async with ca.Session(server.url, token=server.token, policies=[CountIds()], wait=FAST) as s:
        await s.wait(simulation_ids=[*quick, slow[0]], timeout=60)
        final = await s.wait(simulation_ids=[*quick, slow[0]], timeout=60)
    assert final.succeeded == 3
    assert sizes[0] == 3 and min(sizes) == 1  # finished simulations drop out of the polls


async def test_wait_on_a_work_item_and_timeouts(fast_session: ca.Session) -> None:
    order = b'{"Execution": {"Command": "python3 -c \\"import time; time.sleep(30)\\""}}'
    item = ca.WorkItem(
        name="sleepy",
        environment_name="Local",
        worker=ca.WorkerType(name="DockerWorker", version="1"),
        files=[ca.WorkItemFile.from_bytes("WorkOrder.json", order, file_type="WorkOrder")],
    )
    await fast_session.work_items.save(item)
    await fast_session.work_items.commission(item)
    with pytest.raises(TimeoutError):
        await fast_session.wait(work_item_id=item, timeout=0.5)
    await fast_session.work_items.cancel(item)
    final = await fast_session.wait(work_item_id=item, timeout=30)
    assert final.counts == {"Canceled": 1} and final.finished


async def test_bad_targets(fast_session: ca.Session) -> None:
    with pytest.raises(ca.NotFoundError):
        await fast_session.wait(experiment_id=uuid4(), timeout=5)
    with pytest.raises(ValueError, match="exactly one"):
        await fast_session.wait(timeout=5)
    with pytest.raises(ValueError, match="not a valid id"):
        await fast_session.wait(simulation_ids=["nope"], timeout=5)


HOST = "http://waiting.test"
EXP = UUID("225abe99-7e2c-e411-93f2-f0921c167860")


async def test_adaptive_interval_and_fallback_without_stats(tmp_path: Path) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))

    settings = ca.WaitSettings(
        initial_interval_s=1, max_interval_s=4, backoff=2, jitter=0, sleep=sleep
    )
    states = iter(
        [["Running", "Running"]] * 4 + [["Running", "Succeeded"]] + [["Succeeded", "Succeeded"]]
    )
    with respx.mock(base_url=HOST) as router:
        stats = router.get(f"/api/Experiments/{EXP}/Stats").respond(
            404, json={"ResponseMessage": "?"}
        )
        newer = router.get("/api/Experiments").respond(400, json={"ResponseMessage": "?"})
        router.get(f"/api/Experiments/{EXP}").respond(json={"Experiments": [{"Id": str(EXP)}]})
        listing = router.get("/api/Simulations").mock(
            side_effect=lambda r: httpx.Response(
                200,
                json={
                    "Simulations": [
                        {"Id": str(uuid4()), "SimulationState": s} for s in next(states)
                    ]
                },
            )
        )
        async with ca.Session(
            HOST,
            token="t",
            wait=settings,
            token_cache_dir=tmp_path,
            transport=httpx.AsyncHTTPTransport(),
        ) as s:
            final = await s.wait(experiment_id=EXP)
    assert final.succeeded == 2 and stats.call_count == newer.call_count == 1  # neither form
    # Unchanged polls back off 1 -> 2 -> 4 (capped); a change snaps back to 1.
    assert slept == [1, 2, 4, 4, 1]
    params = listing.calls[0].request.url.params
    assert params["fields"] == "Id,SimulationState"
    assert params["filters"] == f"ExperimentId={EXP}"
    assert stats.call_count == 1  # Stats is not asked again once known missing
