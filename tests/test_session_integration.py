"""Every Session operation against the real local server over HTTP."""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

import comps_async as ca
from comps_async.local import FaultConfig, LocalComps
from comps_async.pipeline import CallNext

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"
CONFIG = (FIXTURES / "config.json").read_bytes()


def sims_for(experiment: ca.Experiment, count: int, **tags: object) -> list[ca.Simulation]:
    return [
        ca.Simulation(
            name=f"s{i}",
            experiment_id=experiment.id,
            tags={"i": i, **tags},
            files=[ca.SimulationFile.from_bytes("config.json", CONFIG)],
        )
        for i in range(count)
    ]


async def test_login_with_username_and_password(server: LocalComps, tmp_path: Path) -> None:
    server.user_directory.set_password("bob", "pa55word")
    async with ca.Session(
        server.url, username="bob", password="pa55word", token_cache_dir=tmp_path
    ) as s:
        suite = await s.suites.create(ca.Suite(name="bob's"))
        got = await s.suites.get(suite)
        assert got.owner == "bob"
    # A second session reuses the cached token instead of logging in again.
    before = server.faults.counters["POST /api/tokens"]
    async with ca.Session(
        server.url, username="bob", password="pa55word", token_cache_dir=tmp_path
    ) as s:
        await s.suites.get(suite)
    assert server.faults.counters["POST /api/tokens"] == before
    async with ca.Session(
        server.url, username="bob", password="wrong", token_cache_dir=tmp_path / "other"
    ) as s:
        with pytest.raises(ca.AuthenticationError):
            await s.suites.list()


async def test_entity_operations_end_to_end(session: ca.Session, experiment: ca.Experiment) -> None:
    suite = await session.suites.create(ca.Suite(name="suite", tags={"team": "calib"}))
    experiment.suite_id = suite.id
    experiment.description = "moved into a suite"
    await session.experiments.save(experiment)
    assert [e.id for e in await session.suites.experiments(suite)] == [experiment.id]
    fetched = await session.experiments.get(experiment.id, children=["configuration", "tags"])
    assert fetched.description == "moved into a suite"
    assert fetched.configuration is not None
    assert fetched.configuration.executable_path == "python3"

    sims = sims_for(experiment, 5)
    assert await session.simulations.save_all(sims) == 5
    assert all(s.id is not None and s.state is ca.SimulationState.Created for s in sims)
    query = ca.Query().where([f"experiment_id={experiment.id}"])
    assert await session.simulations.count(query) == 5
    listed = await session.experiments.simulations(experiment, ca.Query().orderby("name desc"))
    assert [s.name for s in listed] == ["s4", "s3", "s2", "s1", "s0"]
    assert query.filters == (f"experiment_id={experiment.id}",)  # caller's query untouched
    paged = [s.id async for s in session.simulations.iterate(query, page_size=2)]
    assert paged == [s.id for s in sims]
    many = await session.simulations.get_many([sims[3].id, sims[1].id], children=["tags"])
    assert [(m.id, (m.tags or {}).get("i")) for m in many] == [(sims[3].id, "3"), (sims[1].id, "1")]

    await session.simulations.merge_tags(sims[0], {"extra": "x"})
    await session.simulations.delete_tags(sims[0], ["i"])
    refreshed = await session.simulations.refresh(sims[0])
    reserved = (ca.BATCH_TAG, ca.KEY_TAG)
    assert refreshed is sims[0] and {
        k: v for k, v in (sims[0].tags or {}).items() if k not in reserved
    } == {"extra": "x"}
    await session.simulations.set_tags(sims[1], {"only": "this"})
    assert (await session.simulations.get(sims[1].id, children=["tags"])).tags == {"only": "this"}

    await session.simulations.delete([sims[3], sims[4]], expire_now=True)
    assert await session.simulations.count(query) == 3
    with pytest.raises(ca.NotFoundError):
        await session.simulations.get(sims[3].id)
    await session.experiments.commission(experiment)
    assert (await session.wait(experiment_id=experiment, timeout=60)).succeeded == 3
    done = await session.simulations.get(sims[0].id, children=["hpc_jobs"])
    assert done.state is ca.SimulationState.Succeeded
    assert done.hpc_jobs and done.hpc_jobs[-1].job_state is ca.HpcState.Finished
    with pytest.raises(ca.ConflictError):
        await session.simulations.commission(done)


async def test_work_items_relations_without_n_plus_one(
    server: LocalComps, session: ca.Session, experiment: ca.Experiment
) -> None:
    sims = sims_for(experiment, 4)
    await session.simulations.save_all(sims)
    order = {"WorkItem_Type": "DockerWorker", "Execution": {"Command": "python3 -V"}}
    work_item = ca.WorkItem(
        name="analyse",
        environment_name="Local",
        worker=ca.WorkerType(name="DockerWorker", version="1.0.0.0_RELEASE"),
        files=[ca.WorkItemFile.work_order(order)],
    )
    await session.work_items.save(work_item)
    assert work_item.id is not None and work_item.state is ca.WorkItemState.Created
    for sim in sims:
        await session.work_items.add_related(work_item, sim)
    await session.work_items.add_related(work_item, experiment, ca.RelationType.Created)
    server.faults.counters.clear()
    related = await session.work_items.related(work_item)
    assert sorted(s.id for s in related["Simulation"]) == sorted(s.id for s in sims)  # type: ignore[type-var]
    assert [e.id for e in related["Experiment"]] == [experiment.id]
    gets = sum(n for key, n in server.faults.counters.items() if key.startswith("GET"))
    assert gets == 3  # the relation list plus one list call per type, not one GET per entity
    only = await session.work_items.related(work_item, relation=ca.RelationType.Created)
    assert list(only) == ["Experiment"]
    parents = await session.simulations.parents(sims[0])
    assert [p.id for p in parents] == [work_item.id]
    await session.work_items.commission(work_item)
    assert (await session.wait(work_item_id=work_item, timeout=30)).finished


async def test_environments_and_macros(session: ca.Session) -> None:
    assert await session.environments() == ["Local"]
    macros = await session.environment_macros("Local")
    assert "COMPS_PATH(USER)" in macros
    # Lenient by default: an environment written for COMPS (idmtools reads Calculon's mounts)
    # is answered here too; a strict server refuses it (tests/test_local_as_comps.py).
    assert "DOCKER_MOUNTS" in await session.environment_macros("Calculon")


async def test_retry_policy_rides_out_503s_and_resets(server: LocalComps, tmp_path: Path) -> None:
    retry = ca.RetryPolicy(max_attempts=12, backoff_base_s=0.001)
    async with ca.Session(
        server.url, token=server.token, retry=retry, token_cache_dir=tmp_path
    ) as session:
        suite = await session.suites.create(ca.Suite(name="flaky"))
        server.faults.configure(
            FaultConfig(
                error_503_rate=0.3,
                reset_before_rate=0.1,
                retry_after_s=0.01,
                routes="GET /api/Suites",
                seed=1,  # the first roll is a 503: the test never passes without a fault
            )
        )
        before = dict(server.faults.injected)
        for _ in range(10):
            assert (await session.suites.get(suite)).id == suite.id
    injected = {k: v - before.get(k, 0) for k, v in server.faults.injected.items()}
    assert injected.get("503", 0) + injected.get("reset_before", 0) > 0


async def test_custom_policy_counts_real_requests(server: LocalComps, tmp_path: Path) -> None:
    class Counting:
        def __init__(self) -> None:
            self.count = 0

        async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
            self.count += 1
            return await call_next(request)

    counting = Counting()
    async with ca.Session(
        server.url, token=server.token, policies=[counting], token_cache_dir=tmp_path
    ) as s:
        await s.suites.create(ca.Suite(name="counted"))
        await s.suites.list(ca.Query().count(1))
    assert counting.count == 2


async def test_many_sessions_to_many_hosts_in_one_process(tmp_path: Path) -> None:
    async with LocalComps(tmp_path / "a") as a, LocalComps(tmp_path / "b") as b:
        async with (
            ca.Session(a.url, token=a.token, token_cache_dir=tmp_path) as sa,
            ca.Session(b.url, token=b.token, token_cache_dir=tmp_path) as sb,
        ):
            only_a = await sa.suites.create(ca.Suite(name=f"a-{uuid4()}"))
            with pytest.raises(ca.NotFoundError):
                await sb.suites.get(only_a)
            assert (await sa.suites.get(only_a)).id == only_a.id
        async with httpx.AsyncClient() as raw:  # a token of one server means nothing to the other
            response = await raw.get(f"{b.url}/api/Suites", headers={"X-COMPS-Token": a.token})
            assert response.status_code == 401


async def test_unreachable_server_is_a_transfer_error(tmp_path: Path) -> None:
    async with ca.Session(
        "http://127.0.0.1:9",
        token=base64.b64encode(b"x").decode(),
        retry=ca.RetryPolicy(max_attempts=2, backoff_base_s=0.001),
        token_cache_dir=tmp_path,
    ) as s:
        with pytest.raises(ca.TransferError, match="reachable"):
            await s.suites.list()


async def test_token_renewal_against_the_local_server(tmp_path: Path) -> None:
    """Logged in, then renewed (PUT /api/tokens) once the session's clock passes the renewal
    point, then logged in again when the token has expired: no real waiting."""
    from datetime import UTC, datetime, timedelta

    async with LocalComps(tmp_path / "server", users={"carol": "pw"}) as server:
        seen: list[str] = []

        class Tokens:
            async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
                if request.url.path.endswith("/Suites"):
                    seen.append(request.headers["X-COMPS-Token"])
                return await call_next(request)

        async with ca.Session(
            server.url,
            username="carol",
            password="pw",
            policies=[Tokens()],
            token_cache_dir=tmp_path,
        ) as s:
            await s.suites.list()
            assert server.faults.counters["POST /api/tokens"] == 1
            now = datetime.now(UTC)
            # 3 h 45 min later: inside the last 30 minutes of a 4-hour token.
            s.tokens.clock = lambda: now + timedelta(hours=3, minutes=45)
            await s.suites.list()
            assert server.faults.counters["PUT /api/tokens"] == 1
            s.tokens.clock = lambda: datetime.now(UTC)
            await s.suites.list()  # the renewed token is good for hours: no second renewal
            assert server.faults.counters["PUT /api/tokens"] == 1
            s.tokens.clock = lambda: now + timedelta(hours=5)  # expired: log in again
            await s.suites.list()
            assert server.faults.counters["POST /api/tokens"] == 2
    assert len(seen) == 4 and all(seen)  # every call carried a token


# A work order whose command copies the work item's in.txt to out.txt.
COPY_ORDER = {
    "WorkItem_Type": "DockerWorker",
    "Execution": {"Command": "python3 -c \"open('out.txt','w').write(open('in.txt').read())\""},
}


def copying_work_item(*files: ca.WorkItemFile) -> ca.WorkItem:
    """A new work item that runs ``COPY_ORDER``, with ``files`` beside its work order."""
    return ca.WorkItem(
        name="order",
        environment_name="Local",
        worker=ca.WorkerType(name="DockerWorker", version="1.0.0.0_RELEASE"),
        files=[ca.WorkItemFile.work_order(COPY_ORDER), *files],
    )


async def test_a_work_item_runs_its_work_order(session: ca.Session) -> None:
    """The work-item recipe of the docs (basics.md): the order travels as WorkOrder.json
    (FileType WorkOrder), the worker runs its command with the other files beside it, outputs
    come back."""
    work_item = copying_work_item(ca.WorkItemFile.from_bytes("in.txt", b"from the input"))
    await session.work_items.save(work_item)
    await session.work_items.commission(work_item)
    assert (await session.wait(work_item_id=work_item, timeout=60)).succeeded == 1
    assert await session.outputs.read(work_item, "out.txt") == b"from the input"
    stored = await session.work_items.get(work_item.id, children=["files"])
    (sent,) = [f for f in stored.files or [] if f.file_name == "WorkOrder.json"]
    assert sent.file_type == "WorkOrder"
    assert json.loads(await session.outputs.read(work_item, "WorkOrder.json")) == COPY_ORDER
    with pytest.raises(TypeError, match="mapping or bytes"):
        ca.WorkItemFile.work_order("not json")  # type: ignore[arg-type]


async def test_a_file_added_to_a_saved_work_item_lands_once(
    server: LocalComps, session: ca.Session
) -> None:
    """An update of a work item sends the files added since its last save, and only those
    (§6.4, as pyCOMPS): the worker then finds the added file beside its work order, and the
    work order is not stored twice."""
    work_item = copying_work_item()
    await session.work_items.save(work_item)
    assert work_item.files is not None
    work_item.files.append(ca.WorkItemFile.from_bytes("in.txt", b"added later"))
    await session.work_items.save(work_item)
    stored = await session.work_items.get(work_item.id, children=["files"])
    assert sorted(f.file_name for f in stored.files or []) == ["WorkOrder.json", "in.txt"]
    server.faults.counters.clear()
    await session.work_items.save(work_item)  # unchanged since: nothing is sent
    assert server.faults.counters["POST /api/WorkItems"] == 0
    await session.work_items.commission(work_item)
    assert (await session.wait(work_item_id=work_item, timeout=60)).succeeded == 1
    assert await session.outputs.read(work_item, "out.txt") == b"added later"


def test_a_session_without_credentials_asks_at_the_terminal(tmp_path: Path) -> None:
    """pyCOMPS's console prompt is the default when a person is at a terminal: run a script
    under a pseudo-terminal, answer the prompts, and it logs in (the password is not echoed)."""
    script = (
        "import anyio, comps_async as ca\n"
        "async def main():\n"
        f"    async with ca.Session(URL, token_cache_dir={str(tmp_path)!r}) as s:\n"
        "        print('suites:', len(await s.suites.list()), flush=True)\n"
        "anyio.run(main)\n"
    )
    with LocalComps(tmp_path / "server", users={"alice": "wonderland"}) as server:
        controller, terminal = os.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPS_")}
        child = subprocess.Popen(
            [sys.executable, "-c", script.replace("URL", repr(server.url))],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=env,
            close_fds=True,
        )
        os.close(terminal)
        seen, deadline = b"", time.monotonic() + 60
        answers = [(b"Username:", b"alice\n"), (b"Password:", b"wonderland\n")]
        try:
            # Read until the child has exited and its terminal is drained (a busy machine
            # delivers "suites:" and the count in separate reads), or the deadline passes.
            while time.monotonic() < deadline:
                ready, _, _ = select.select([controller], [], [], 0.2)
                if ready:
                    try:
                        chunk = os.read(controller, 4096)
                    except OSError:
                        break  # the child closed the terminal: everything is read
                    if not chunk:
                        break
                    seen += chunk
                elif child.poll() is not None:
                    break  # exited, and nothing is left to read
                if answers and answers[0][0] in seen:
                    os.write(controller, answers.pop(0)[1])
        finally:
            child.wait(30)
            os.close(controller)
    assert b"Log in to " + server.url.encode() in seen
    assert b"suites: 0" in seen and child.returncode == 0, seen.decode(errors="replace")
    assert b"wonderland" not in seen  # not echoed
