"""The sync facade and the examples, run against the local server."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import uuid4

import anyio
import httpx
import pytest

import comps_async as ca
import comps_async.sync
from comps_async.local import LocalComps
from comps_async.sync import Session as SyncSession

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FileCount(ca.Analyzer):
    """The size of each simulation's chart (a map that needs one file)."""

    filenames = ("output/InsetChart.json",)

    def map(self, data: dict[str, Any], item: Any) -> int:
        return len(data["output/InsetChart.json"])


def test_sync_session_mirrors_the_async_one(comps_server: LocalComps, tmp_path: Path) -> None:
    result = load("sync_script").run(comps_server.url, comps_server.token, count=3)
    assert result["succeeded"] == 3 and "peak infected" in result["tail"]
    assert sorted(result["listed"]) == ["s0", "s1", "s2"]
    with SyncSession(comps_server.url, token=comps_server.token) as s:
        harvested = list(s.outputs.harvest(result["experiment_id"], ["output/*.json"], tmp_path))
        assert len(harvested) == 3 and all(h.ok for h in harvested)
        # As on the async side, a context manager: leaving the block stops the rest.
        with s.outputs.harvest(result["experiment_id"], ["*"], tmp_path / "again") as results:
            first = next(iter(results))
        assert first.ok and results.simulations_listed >= 1
        assert list(results) == []  # closed: nothing more comes
        with s.analyze(result["experiment_id"], [FileCount()]) as outcomes:
            assert next(outcomes).ok
        assert list(outcomes) == []
        statuses = list(s.watch(experiment_id=result["experiment_id"]))
        assert statuses[-1].finished
        with pytest.raises(ca.NotFoundError):
            s.simulations.get(uuid4())
        with pytest.raises(ValueError, match="not a valid id"):
            s.simulations.get("nope")
        assert s.environments() == ["Local"]


def test_sync_session_works_inside_a_running_loop(comps_server: LocalComps) -> None:
    async def notebook_cell() -> list[str]:  # what Jupyter looks like: a loop is running
        with SyncSession(comps_server.url, token=comps_server.token) as s:
            return s.environments()

    assert asyncio.run(notebook_cell()) == ["Local"]


def test_calibration_loop_runs_and_resumes(comps_server: LocalComps, tmp_path: Path) -> None:
    example = load("calibration_loop")
    name = f"calib-{uuid4()}"

    async def go() -> tuple[dict[str, object], int]:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            result = await example.calibrate(s, name, 6, tmp_path)
            query = ca.Query().where_tag([f"calibration={name}"])
            return result, await s.experiments.count(query)

    first, experiments = anyio.run(go)
    assert experiments == 3 and len(first["history"]) == 3  # type: ignore[arg-type]
    assert all(h["simulations"] == 6 for h in first["history"])  # type: ignore[attr-defined]
    again, experiments_after = anyio.run(go)  # resumed: nothing is submitted twice
    assert experiments_after == 3 and again["history"] == first["history"]


@pytest.mark.anyio
async def test_async_service_submits_and_reports(comps_server: LocalComps) -> None:
    app = load("async_service").create_app(comps_server.url, comps_server.token)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://service"
        ) as client,
    ):
        sweep = {"name": "svc", "betas": [0.2, 0.4, 0.8]}
        key = {"Idempotency-Key": f"svc-{uuid4()}"}
        created = await client.post("/sweeps", json=sweep, headers=key)
        assert created.status_code == 201
        body = created.json()
        assert len(body["simulation_ids"]) == 3
        # The client retries (its answer was lost): the same sweep, nothing created twice.
        again = await client.post("/sweeps", json=sweep, headers=key)
        assert again.json() == body
        refused = await client.post("/sweeps", json=sweep, headers={"Idempotency-Key": "a b"})
        assert refused.status_code == 400
        with anyio.fail_after(120):
            while not (progress := (await client.get(f"/sweeps/{body['experiment_id']}")).json())[
                "done"
            ]:
                await anyio.sleep(0.1)  # poll interval; fail_after above is the deadline
        assert progress["counts"] == {"Succeeded": 3}
        assert (await client.post("/sweeps", json={})).status_code == 400
        assert (await client.get(f"/sweeps/{uuid4()}")).status_code == 404


def test_bulk_harvest_analyses_while_files_land(comps_server: LocalComps, tmp_path: Path) -> None:
    example = load("bulk_harvest")
    sync_result = load("sync_script").run(comps_server.url, comps_server.token, count=8)

    async def go() -> dict[str, object]:
        async with ca.Session(comps_server.url, token=comps_server.token) as s:
            return await example.harvest_and_analyse(s, sync_result["experiment_id"], tmp_path)

    result = anyio.run(go)
    assert result["files"] == 8 and result["failures"] == {}
    assert 0 < float(result["mean_peak"]) <= 1  # type: ignore[arg-type]


# What the sync twin leaves out on purpose, and why.
NOT_TWINNED = {
    "find_by_keys": "exactly-once internals of saves",
    "stats_forms": "protocol internals of stats",
    "fetch_zip": "the second half of zip()",
    "adopt": "host capabilities are adopted when the session opens",
    "remember": "host capabilities are recorded by the SDK itself",
    "spawn": "background tasks belong to the async session",
    "aclose": "close() / the with block",
    "build_request": "the request layer: request() is twinned",
    "send": "the request layer: request() is twinned",
    "stream": "streaming responses need the async API",
    "resource": "the resources are attributes",
}
PAIRS = [
    ("suites", "Suites"),
    ("experiments", "Experiments"),
    ("simulations", "Simulations"),
    ("work_items", "WorkItems"),
    ("asset_collections", "AssetCollections"),
    ("outputs", "Outputs"),
]
MODELS = {
    "Suites": "Suite",
    "Experiments": "Experiment",
    "Simulations": "Simulation",
    "WorkItems": "WorkItem",
    "AssetCollections": "AssetCollection",
}
# How an async annotation is spelled on the sync side: the only ways a twin may differ.
SYNC_SPELLING = [
    (r"\bbuiltins\.list\b", "list"),
    (r"^AsyncGenerator\[(.+), None\]$", r"Iterator[\1]"),  # iterators become generators
    (r"^AsyncIterator\[(.+)\]$", r"Iterator[\1]"),
    (r" \| AsyncIterable\[\w+\]", ""),  # a sync caller has no async iterables
    (r"Awaitable\[Any\]", "object"),  # a callback returns, it is not awaited
    (r"^Harvest$", "SyncHarvest"),
    (r"^Analysis$", "SyncAnalysis"),
]
ASYNC_WORDS = re.compile(r"\bawait\b|\basync (with|for)\b")


def _public(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def _shape(fn: object) -> list[tuple[str, object, object]]:
    """Parameter names, kinds and defaults."""
    params = list(inspect.signature(fn).parameters.values())  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in params if p.name != "backend"]


def _types(fn: object, model: str | None, sync: bool) -> dict[str, str]:
    """Parameter and return annotations, as the sync side spells them (type variables read
    as the resource's model)."""
    spelled = {}
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        text = str(annotation)
        if model is not None:
            text = re.sub(r"\b[EBJ]\b", model, text)
        for pattern, replacement in SYNC_SPELLING if not sync else SYNC_SPELLING[:1]:
            text = re.sub(pattern, replacement, text)
        spelled[name] = text
    return spelled


@pytest.mark.parametrize(("attribute", "name"), [("", "Session"), *PAIRS])
def test_the_sync_twin_has_every_public_method_with_the_same_arguments(
    attribute: str, name: str
) -> None:
    session = ca.Session("http://127.0.0.1:1", token="t")
    async_cls = type(getattr(session, attribute)) if attribute else ca.Session
    sync_cls = SyncSession if not attribute else getattr(comps_async.sync, f"Sync{name}")
    theirs, ours = _public(async_cls), _public(sync_cls)
    missing = sorted(set(theirs) - set(ours) - set(NOT_TWINNED))
    assert not missing, f"{name}: no sync twin for {missing}"
    model = MODELS.get(name)
    for method in set(theirs) & set(ours):
        assert _shape(ours[method]) == _shape(theirs[method]), f"{name}.{method}"
        expected = _types(theirs[method], model, sync=False)
        assert _types(ours[method], model, sync=True) == expected, f"{name}.{method} types"
        doc = ours[method].__doc__  # type: ignore[attr-defined]
        assert doc, f"{name}.{method} has no docstring"
        assert not ASYNC_WORDS.search(doc), f"{name}.{method}: a docstring for async callers"
    if not attribute:
        assert _shape(SyncSession.__init__) == _shape(ca.Session.__init__)


def test_the_sync_twin_is_visible_to_people_and_tools() -> None:
    """dir(), help() and mypy see real methods, not a __getattr__ proxy."""
    assert {"save_all", "iterate", "commission"} <= set(dir(comps_async.sync.SyncSimulations))
    assert "experiment_id" in str(inspect.signature(SyncSession.wait))
    assert SyncSession.wait.__doc__ == ca.Session.wait.__doc__


def test_where_sync_callbacks_run(comps_server: LocalComps) -> None:
    """The documented rule: ``after_batch`` (which may call the session back) runs in a worker
    thread and may; ``on_progress`` runs in the session's loop thread, where calling the
    session fails at once (no deadlock) and leaves the session usable."""
    seen: dict[str, object] = {}
    with SyncSession(comps_server.url, token=comps_server.token) as s:

        def after_batch(batch: list[ca.WorkItem]) -> None:
            seen["from_after_batch"] = s.environments()  # calling back: allowed

        item = ca.WorkItem(
            name="w", environment_name="Local", worker=ca.WorkerType(name="W", version="1")
        )
        s.work_items.save_all([item], after_batch=after_batch)
        assert seen["from_after_batch"] == ["Local"]

        def on_progress(done: int, total: int | None) -> None:
            try:
                s.environments()
            except RuntimeError as exc:
                seen["from_on_progress"] = str(exc)

        exp = s.experiments.create(ca.Experiment(name="cb"))
        s.simulations.save_all(
            [ca.Simulation(name="a", experiment_id=exp.id)], on_progress=on_progress
        )
        assert "event loop thread" in str(seen["from_on_progress"])
        assert s.environments() == ["Local"]


def test_a_closed_sync_session_and_its_iterators_say_so(comps_server: LocalComps) -> None:
    s = SyncSession(comps_server.url, token=comps_server.token)
    pages = s.simulations.iterate(page_size=1)
    s.close()
    s.close()  # idempotent
    with pytest.raises(comps_async.sync.SessionClosedError, match="closed"):
        s.environments()
    with pytest.raises(comps_async.sync.SessionClosedError, match="closed"):
        next(pages)
