"""The local COMPS server over real sockets: protocol §15, checked with plain httpx."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import anyio.abc
import httpx
import pytest

from comps_async.local import FaultConfig, LocalComps, sir_configuration
from comps_async.local.blobs import BlobStore
from comps_async.local.sir import simulate

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"
CONFIG = (FIXTURES / "config.json").read_bytes()
RUN_SIR = {
    "EnvironmentName": "Local",
    "ExecutablePath": "python3",
    "SimulationInputArgs": "-m comps_async.local.sir --config config.json",
}


def md5_of(data: bytes) -> str:
    return str(UUID(hashlib.md5(data).hexdigest()))


@pytest.fixture
async def http(server: LocalComps) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url, headers={"X-COMPS-Token": server.token}, timeout=30
    ) as client:
        yield client


async def new_experiment(
    http: httpx.AsyncClient, config: dict[str, object] | None = None, name: str = "exp"
) -> str:
    response = await http.post(
        "/api/Experiments",
        json={"Experiments": [{"Name": name, "Configuration": config or RUN_SIR}]},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["Ids"][0])


def multipart(
    entities: list[dict[str, object]], parts: dict[str, bytes], plural: str = "Simulations"
) -> list[tuple[str, tuple[str, bytes, str]]]:
    files = [("not_a_file", (plural, json.dumps(entities).encode(), "application/json"))]
    files += [(md5, ("f", data, "application/octet-stream")) for md5, data in parts.items()]
    return files


async def save_sims(
    http: httpx.AsyncClient, experiment: str, count: int, tags: dict[str, object] | None = None
) -> list[str]:
    sims = [
        {
            "Name": f"s{i}",
            "ExperimentId": experiment,
            "Tags": {"i": i, **(tags or {})},
            "Files": [{"FileName": "config.json", "MD5Checksum": md5_of(CONFIG)}],
        }
        for i in range(count)
    ]
    response = await http.post("/api/Simulations", files=multipart(sims, {md5_of(CONFIG): CONFIG}))
    assert response.status_code == 200, response.text
    return [str(i) for i in response.json()["Ids"]]


async def wait_for_state(
    http: httpx.AsyncClient, experiment: str, state: str, count: int, deadline_s: float = 60
) -> dict[str, int]:
    counts: dict[str, int] = {}
    with anyio.fail_after(deadline_s):
        while counts.get(state) != count:
            response = await http.get(f"/api/Experiments/{experiment}/Stats")
            counts = response.json()["Stats"][experiment]["SimulationStateCount"]
            await anyio.sleep(0.05)  # poll interval, bounded by the deadline above
    return counts


async def test_tokens_login_renew_and_401(server: LocalComps) -> None:
    password = "correct horse"
    server.user_directory.set_password("alice", password)
    async with httpx.AsyncClient(base_url=server.url) as client:
        unauth = await client.get("/api/Suites")
        assert unauth.status_code == 401
        assert set(unauth.json()) >= {"ResponseMessage", "CorrelationId"}
        bad = await client.post(
            "/api/tokens",
            json={"Username": "alice", "Password": base64.b64encode(b"nope").decode()},
        )
        assert bad.status_code == 401
        good = await client.post(
            "/api/tokens",
            json={
                "UserName": "alice",
                "Password": base64.b64encode(password.encode()).decode(),
                "ClientVersion": 12,
            },
        )
        token = good.headers["X-COMPS-Token"]
        assert good.json()["Token"] == token and token.split(",")[1:3] == ["Auth", "alice"]
        assert len(token.split(",")) >= 15
        renewed = await client.put(
            "/api/tokens", headers={"X-COMPS-Token": token}, json={"ClientVersion": 12}
        )
        assert renewed.status_code == 200 and renewed.headers["X-COMPS-Token"]
        forged = token.replace("alice", "local")
        assert (
            await client.get("/api/Suites", headers={"X-COMPS-Token": forged})
        ).status_code == 401
        ok = await client.get(
            "/API/suites", headers={"X-COMPS-Token": token}, params={"format": "json"}
        )
        assert ok.status_code == 200 and "Suites" in ok.json()


async def test_json_saves_filters_paging_and_content_range(http: httpx.AsyncClient) -> None:
    suite = (await http.post("/api/Suites", json={"Suites": [{"Name": "suite-paging"}]})).json()[
        "Ids"
    ][0]
    names = [f"paging-{i:02d}" for i in range(7)]
    for name in names:
        response = await http.post(
            "/api/Experiments",
            json={"Experiments": [{"Name": name, "SuiteId": suite, "Tags": {"n": name[-2:]}}]},
        )
        assert response.status_code == 200
    params = {"filters": f"SuiteId={suite}", "orderby": "Name desc", "count": 3, "offset": 2}
    page = await http.get("/api/Experiments", params=params)
    assert page.headers["Content-Range"] == "items 2-4/7"
    assert [e["Name"] for e in page.json()["Experiments"]] == sorted(names, reverse=True)[2:5]
    everything = await http.get("/api/Experiments", params={"filters": f"SuiteId={suite}"})
    assert "Content-Range" not in everything.headers
    assert len(everything.json()["Experiments"]) == 7
    tagged = await http.get(
        "/api/experiments",
        params={
            "filters": f"suiteid={suite},Name~paging-0%",
            "tagfilters": "n>=05",
            "fields": "Id,Name",
            "children": "Tags",
        },
    )
    rows = tagged.json()["Experiments"]
    assert [r["Name"] for r in rows] == ["paging-05", "paging-06"]
    assert set(rows[0]) == {"Id", "Name", "Tags"}
    bad = await http.get("/api/Experiments", params={"filters": "Nope=1"})
    assert bad.status_code == 400 and "Nope" in bad.json()["ResponseMessage"]
    assert (await http.get(f"/api/Experiments/{uuid4()}")).status_code == 404
    assert (await http.get("/api/Experiments/not-a-uuid")).status_code == 400
    assert (await http.get("/api/Experiments", params={"count": -1})).status_code == 400
    # Update keeps the id and changes the name.
    exp = everything.json()["Experiments"][0]["Id"]
    await http.post("/api/Experiments", json={"Experiments": [{"Id": exp, "Name": "renamed"}]})
    got = await http.get(f"/api/Experiments/{exp}")
    assert got.json()["Experiments"][0]["Name"] == "renamed"


async def test_multipart_save_is_atomic_and_dedups(
    http: httpx.AsyncClient, server: LocalComps
) -> None:
    experiment = await new_experiment(http)
    unknown = str(uuid4())
    sims = [
        {
            "Name": "ok",
            "ExperimentId": experiment,
            "Files": [{"FileName": "config.json", "MD5Checksum": md5_of(CONFIG)}],
        },
        {
            "Name": "bad",
            "ExperimentId": experiment,
            "Files": [{"FileName": "x.bin", "MD5Checksum": unknown}],
        },
    ]
    response = await http.post("/api/Simulations", files=multipart(sims, {md5_of(CONFIG): CONFIG}))
    assert response.status_code == 400
    assert response.json()["UntrackedIds"] == [unknown]
    listed = await http.get("/api/Simulations", params={"filters": f"ExperimentId={experiment}"})
    assert listed.json()["Simulations"] == []  # nothing half-created
    # The attached part was stored, so a re-send by md5 only now succeeds (dedup).
    ids = await save_sims(http, experiment, 3)
    assert len(ids) == 3 and len(set(ids)) == 3
    md5only = [
        {
            "Name": "again",
            "ExperimentId": experiment,
            "Files": [{"FileName": "config.json", "MD5Checksum": md5_of(CONFIG)}],
        }
    ]
    response = await http.post("/api/Simulations", files=multipart(md5only, {}))
    assert response.status_code == 200
    blob = server.blobs.path(UUID(md5_of(CONFIG)))
    assert blob.read_bytes() == CONFIG
    sim = (await http.get(f"/api/Simulations/{ids[0]}", params={"children": "Files,Tags"})).json()[
        "Simulations"
    ][0]
    assert sim["SimulationState"] == "Created" and sim["Tags"] == {"i": "0"}
    assert sim["Files"][0]["Length"] == len(CONFIG)
    assert (await http.get(sim["Files"][0]["Uri"])).content == CONFIG


@pytest.mark.parametrize(
    ("entities", "parts", "message"),
    [
        ("not json", {}, "malformed JSON"),
        ({"Name": "x"}, {}, "JSON array"),
        (
            [
                {
                    "Name": "x",
                    "ExperimentId": "@EXP@",
                    "Files": [{"FileName": "../x", "MD5Checksum": "@MD5@"}],
                }
            ],
            {},
            "must not contain a path",
        ),
        (
            [
                {
                    "Name": "x",
                    "ExperimentId": "@EXP@",
                    "Files": [{"FileName": "a", "MD5Checksum": "@MD5@"}],
                }
            ],
            {"@MD5@": b"other bytes"},
            "has md5",
        ),
        ([{"Name": "", "ExperimentId": "@EXP@"}], {}, "needs a Name"),
        ([{"Name": "x", "ExperimentId": str(uuid4())}], {}, "no Experiment"),
    ],
)
async def test_bad_multipart_saves_are_400(
    http: httpx.AsyncClient, entities: object, parts: dict[str, bytes], message: str
) -> None:
    experiment = await new_experiment(http)
    text = entities if isinstance(entities, str) else json.dumps(entities)
    text = text.replace("@EXP@", experiment).replace("@MD5@", md5_of(CONFIG))
    files = [("not_a_file", ("Simulations", text.encode(), "application/json"))]
    files += [
        (k.replace("@MD5@", md5_of(CONFIG)), ("f", v, "application/octet-stream"))
        for k, v in parts.items()
    ]
    response = await http.post("/api/Simulations", files=files)
    assert response.status_code in (400, 404), response.text
    assert message in response.json()["ResponseMessage"]
    listed = await http.get("/api/Simulations", params={"filters": f"ExperimentId={experiment}"})
    assert listed.json()["Simulations"] == []
    not_multipart = await http.post("/api/Simulations", json=[])
    assert not_multipart.status_code == 400


async def test_tags_modes_and_soft_delete(http: httpx.AsyncClient) -> None:
    experiment = await new_experiment(http)
    (sim,) = await save_sims(http, experiment, 1, tags={"keep": "k"})

    async def tags() -> dict[str, object]:
        response = await http.get(f"/api/Simulations/{sim}", params={"children": "Tags"})
        return dict(response.json()["Simulations"][0]["Tags"])

    await http.post(
        f"/api/Simulations/{sim}/tags",
        json={"Tags": {"a": 1, "flag": None}, "OperationMode": "Merge"},
    )
    # A tag sent without a value comes back "" as COMPS answers (idmtools expects it).
    assert await tags() == {"i": "0", "keep": "k", "a": "1", "flag": ""}
    await http.post(
        f"/api/Simulations/{sim}/tags", json={"Tags": {"a": None}, "OperationMode": "Delete"}
    )
    assert "a" not in await tags()
    await http.post(
        f"/api/Simulations/{sim}/tags", json={"Tags": {"only": True}, "OperationMode": "Replace"}
    )
    assert await tags() == {"only": "True"}
    has_flag = await http.get(
        "/api/Simulations", params={"tagfilters": "only", "filters": f"ExperimentId={experiment}"}
    )
    assert [s["Id"] for s in has_flag.json()["Simulations"]] == [sim]
    assert (
        await http.delete(f"/api/Experiments/{experiment}", params={"expirenow": "True"})
    ).status_code == 200
    assert (await http.get(f"/api/Simulations/{sim}")).status_code == 404
    assert (await http.get(f"/api/Experiments/{experiment}")).status_code == 404


async def test_runner_runs_the_sir_model_and_serves_outputs(http: httpx.AsyncClient) -> None:
    experiment = await new_experiment(http)
    ids = await save_sims(http, experiment, 3)
    assert (
        await http.put(f"/api/Experiments/{experiment}/State/CommissionRequested")
    ).status_code == 200
    # Idempotent: commissioning again changes nothing and is not an error.
    assert (
        await http.put(f"/api/Experiments/{experiment}/State/CommissionRequested")
    ).status_code == 200
    await wait_for_state(http, experiment, "Succeeded", 3)
    sim = (await http.get(f"/api/Simulations/{ids[0]}", params={"children": "HPCJobs"})).json()[
        "Simulations"
    ][0]
    job = sim["HPCJobs"][-1]
    assert job["JobState"] == "Finished" and job["EndTime"].endswith("Z")
    listing = (await http.get(f"/asset/Simulations/{ids[0]}/Output", params={"flatten": 1})).json()[
        "Resources"
    ]
    by_path = {(r["PathFromRoot"], r["FriendlyName"]): r for r in listing}
    chart = by_path[("output", "InsetChart.json")]
    assert {(".", "stdout.txt"), (".", "stderr.txt"), (".", "config.json")} <= set(by_path)
    whole = await http.get(chart["Url"])
    assert len(whole.content) == chart["Length"]
    assert hashlib.md5(whole.content).hexdigest() == chart["MD5"]
    inset = json.loads(whole.content)
    assert len(inset["Channels"]["Infected"]["Data"]) == 3616
    for header, expected in [
        ("bytes=0-9", whole.content[:10]),
        ("bytes=10-", whole.content[10:]),
        ("bytes=-7", whole.content[-7:]),
    ]:
        part = await http.get(chart["Url"], headers={"Range": header})
        assert part.status_code == 206 and part.content == expected
        assert part.headers["Content-Range"].startswith("bytes ")
    beyond = await http.get(chart["Url"], headers={"Range": f"bytes={chart['Length'] + 5}-"})
    assert beyond.status_code == 416
    zipped = await http.post(
        f"/asset/Simulations/{ids[0]}/Output",
        params={"zip": 1},
        json={
            "ContainerType": "CompressedZip",
            "Ids": [chart["Id"], by_path[(".", "stdout.txt")]["Id"]],
        },
    )
    (resource,) = zipped.json()["Resources"]
    archive = zipfile.ZipFile(io.BytesIO((await http.get(resource["Url"])).content))
    assert sorted(archive.namelist()) == ["output/InsetChart.json", "stdout.txt"]
    assert archive.read("output/InsetChart.json") == whole.content
    traversal = await http.get(chart["Url"].replace("output/InsetChart.json", "..%2F..%2Fx"))
    assert traversal.status_code in (400, 404)
    stats = await http.get(
        "/api/Experiments",
        params={"Id": experiment, "statsoperations": "simulationcount,simulationstatecount"},
    )
    assert stats.json()["Stats"][experiment]["SimulationCount"] == 3


async def test_failures_retries_and_cancel(http: httpx.AsyncClient) -> None:
    failing = await new_experiment(
        http,
        {
            "EnvironmentName": "Local",
            "ExecutablePath": "python3",
            "SimulationInputArgs": "-c 'import sys; sys.exit(3)'",
            "MaximumNumberOfRetries": 1,
        },
    )
    (sim,) = await save_sims(http, failing, 1)
    await http.put(f"/api/Simulations/{sim}/State/CommissionRequested")
    await wait_for_state(http, failing, "Failed", 1)
    got = (await http.get(f"/api/Simulations/{sim}", params={"children": "HPCJobs"})).json()[
        "Simulations"
    ][0]
    assert "exit code 3" in got["ErrorMessage"] and len(got["HPCJobs"]) == 2  # one retry
    again = await http.put(f"/api/Simulations/{sim}/State/CommissionRequested")
    assert again.status_code == 409
    slow = await new_experiment(
        http,
        {
            "EnvironmentName": "Local",
            "ExecutablePath": "python3",
            "SimulationInputArgs": "-c 'import time; time.sleep(60)'",
        },
    )
    await save_sims(http, slow, 2)
    await http.put(f"/api/Experiments/{slow}/State/CommissionRequested")
    await wait_for_state(http, slow, "Running", 2)
    await http.put(f"/api/Experiments/{slow}/State/CancelRequested")
    await wait_for_state(http, slow, "Canceled", 2, deadline_s=20)


async def test_chunked_upload_resume_gaps_and_md5(
    http: httpx.AsyncClient, server: LocalComps
) -> None:
    data = bytes(range(256)) * 4096 + uuid4().bytes  # ~1 MiB, unique per run
    md5 = md5_of(data)
    assert (await http.get(f"/api/upload/check/{md5}")).status_code == 404

    async def chunk(start: int, end: int, body: bytes | None = None) -> httpx.Response:
        return await http.post(
            f"/api/upload/{md5}",
            content=data[start : end + 1] if body is None else body,
            headers={
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
                "Content-Type": "application/octet-stream",
            },
        )

    assert (await chunk(0, 99_999)).status_code == 200
    check = await http.get(f"/api/upload/check/{md5}")
    assert check.status_code == 206 and check.json() == {"Size": 100_000}
    assert (await chunk(0, 99_999)).status_code == 200  # idempotent re-send
    gap = await chunk(200_000, 299_999)
    assert gap.status_code == 400 and "gap" in gap.json()["ResponseMessage"]
    assert (await chunk(100_000, len(data) - 1)).status_code == 200
    assert (await http.get(f"/api/upload/check/{md5}")).status_code == 200
    assert server.blobs.path(UUID(md5)).read_bytes() == data
    # Wrong content under an md5 is refused and nothing is published.
    other = str(uuid4())
    bad = await http.post(
        f"/api/upload/{other}", content=b"abc", headers={"Content-Range": "bytes 0-2/3"}
    )
    assert bad.status_code == 400
    assert (await http.get(f"/api/upload/check/{other}")).status_code == 404


async def upload_begun(http: httpx.AsyncClient) -> tuple[bytes, str]:
    """11.2 MB of content unique to this run (more than one receive block), of which the
    first 100,000 bytes have been uploaded."""
    data = uuid4().bytes * 700_000
    md5 = md5_of(data)
    first = await http.post(
        f"/api/upload/{md5}",
        content=data[:100_000],
        headers={"Content-Range": f"bytes 0-99999/{len(data)}"},
    )
    assert first.status_code == 200
    return data, md5


async def post_rest(http: httpx.AsyncClient, data: bytes, md5: str) -> httpx.Response:
    return await http.post(
        f"/api/upload/{md5}",
        content=data[100_000:],
        headers={"Content-Range": f"bytes 100000-{len(data) - 1}/{len(data)}"},
    )


@asynccontextmanager
async def garbage_chunk_arriving(
    server: LocalComps, data: bytes, md5: str
) -> AsyncIterator[anyio.abc.SocketStream]:
    """The rest of the upload as a chunk still arriving: 5 MB of garbage sent on a raw
    connection (its first block already on disk), the rest not yet; closed on exit."""
    partial_file = server.blobs.partial_path(UUID(md5))
    host, port = server.url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as raw:
        head = (
            f"POST /api/upload/{md5} HTTP/1.1\r\nHost: {host}\r\n"
            f"X-COMPS-Token: {server.token}\r\n"
            f"Content-Range: bytes 100000-{len(data) - 1}/{len(data)}\r\n"
            f"Content-Length: {len(data) - 100_000}\r\n\r\n"
        )
        await raw.send(head.encode() + b"\xff" * 5_000_000)
        with anyio.fail_after(10):
            while partial_file.stat().st_size <= 100_000:  # written as it arrives
                await anyio.sleep(0.02)  # poll interval, bounded by fail_after
        yield raw


async def test_a_chunk_cut_short_or_too_long_leaves_the_upload_where_it_was(
    http: httpx.AsyncClient, server: LocalComps
) -> None:
    """Chunks are written as they arrive; one that does not arrive whole is undone (bytes and
    running md5), so the upload resumes from the same size and still verifies."""
    data, md5 = await upload_begun(http)
    async with garbage_chunk_arriving(server, data, md5):
        pass  # then the client dies: the connection closes mid-chunk
    partial_file = server.blobs.partial_path(UUID(md5))
    with anyio.fail_after(10):
        while partial_file.stat().st_size != 100_000:  # undone once the server notices
            await anyio.sleep(0.02)  # poll interval, bounded by fail_after

    async def too_long() -> AsyncIterator[bytes]:  # chunked encoding: no Content-Length
        for _ in range(3):
            yield b"\xff" * 2_000_000

    longer = await http.post(
        f"/api/upload/{md5}",
        content=too_long(),
        headers={"Content-Range": f"bytes 100000-5099999/{len(data)}"},
    )
    assert longer.status_code == 400 and "longer" in longer.json()["ResponseMessage"]
    check = await http.get(f"/api/upload/check/{md5}")
    assert check.status_code == 206 and check.json() == {"Size": 100_000}

    rest = await post_rest(http, data, md5)
    assert rest.status_code == 200, rest.text
    assert server.blobs.path(UUID(md5)).read_bytes() == data


async def test_a_chunk_still_arriving_cannot_touch_the_published_blob(
    http: httpx.AsyncClient, server: LocalComps
) -> None:
    """Chunk A (in order) is still arriving when chunk B overlaps it and completes the upload;
    A's later bytes must not land in the published blob."""
    data, md5 = await upload_begun(http)
    async with garbage_chunk_arriving(server, data, md5) as chunk_a:
        rest = await post_rest(http, data, md5)
        assert rest.status_code == 200, rest.text
        assert (await http.get(f"/api/upload/check/{md5}")).status_code == 200
        await chunk_a.send(b"\xff" * 5_000_000)  # enough for A to write another block
        with anyio.fail_after(10):
            reply = await chunk_a.receive()  # A is refused instead of writing into the blob
    assert b" 400 " in reply.split(b"\r\n", 1)[0]
    assert server.blobs.path(UUID(md5)).read_bytes() == data


def test_overlapping_chunks_that_fail_leave_the_received_size_as_it_was(tmp_path: Path) -> None:
    """The blob store's bookkeeping, driven in an order a server only meets by chance: chunk A
    (in order) is arriving when chunk B overlaps it; A is abandoned, then B writes and is
    abandoned too. The size the server reports must not count B's bytes."""
    store = BlobStore(tmp_path)
    data = uuid4().bytes * 20_000
    md5 = UUID(md5_of(data))
    first = store.begin_range(md5, 0, 100_000, len(data))
    first.write([data[:100_000]])
    assert not first.finish()
    chunk_a = store.begin_range(md5, 100_000, len(data), len(data))
    chunk_a.write([data[100_000:150_000]])
    chunk_b = store.begin_range(md5, 100_000, len(data), len(data))
    chunk_a.abandon()
    chunk_b.write([b"\xff" * 120_000])
    chunk_b.abandon()
    assert store.partial_size(md5) == 100_000
    rest = store.begin_range(md5, 100_000, len(data), len(data))
    rest.write([data[100_000:]])
    assert rest.finish()
    assert store.path(md5).read_bytes() == data


async def test_work_items_relations_and_environments(http: httpx.AsyncClient) -> None:
    order = json.dumps(
        {
            "WorkItem_Type": "DockerWorker",
            "Execution": {"Command": "python3 -c \"open('result.txt','w').write('done')\""},
        }
    ).encode()
    wi = [
        {
            "Name": "wi",
            "EnvironmentName": "Local",
            "Worker": {"name": "DockerWorker", "version": "1.0.0.0_RELEASE"},
            "Files": [
                {
                    "FileName": "WorkOrder.json",
                    "FileType": "WorkOrder",
                    "MD5Checksum": md5_of(order),
                }
            ],
        }
    ]
    response = await http.post(
        "/api/WorkItems", files=multipart(wi, {md5_of(order): order}, "WorkItems")
    )
    (wi_id,) = response.json()["Ids"]
    experiment = await new_experiment(http)
    added = await http.post(f"/api/WorkItems/{wi_id}/Related/DependsOn/Experiment/{experiment}")
    assert added.status_code == 200
    related = (await http.get(f"/api/WorkItems/{wi_id}/Related")).json()["Related"]
    assert related[0]["ObjectType"] == "Experiment" and related[0]["Id"] == experiment
    parents = (
        await http.get(f"/api/WorkItems/RelatedEntityId/{experiment}/Type/Experiment")
    ).json()["Parents"]
    assert [p["Id"] for p in parents] == [wi_id]
    await http.put(f"/api/WorkItems/{wi_id}/State/CommissionRequested")
    with anyio.fail_after(30):
        while (
            state := (await http.get(f"/api/WorkItems/{wi_id}")).json()["WorkItems"][0]["State"]
        ) not in ("Succeeded", "Failed"):
            await anyio.sleep(0.05)  # poll interval; fail_after above is the deadline
    assert state == "Succeeded"
    outputs = (await http.get(f"/asset/WorkItems/{wi_id}/Output")).json()["Resources"]
    result = next(r for r in outputs if r["FriendlyName"] == "result.txt")
    assert (await http.get(result["Url"])).content == b"done"
    envs = (await http.get("/api/environments")).json()["Environments"]
    assert envs == [{"EnvironmentName": "Local"}]
    env = (await http.get("/api/Environments/Local")).json()["Environments"]
    assert len(env) == 1 and "Macros" in env[0] and env[0]["GroupName"]


async def test_fault_injection_and_counters(http: httpx.AsyncClient, server: LocalComps) -> None:
    server.faults.configure(
        FaultConfig(error_503_rate=1.0, retry_after_s=3, routes="GET /api/Suites")
    )
    busy = await http.get("/api/Suites")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "3"
    server.faults.configure(FaultConfig(reset_after_rate=1.0, routes="POST /api/Suites"))
    name = f"committed-but-lost-{uuid4()}"
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post("/api/Suites", json={"Suites": [{"Name": name}]})
    server.faults.configure(FaultConfig())
    listed = await http.get("/api/Suites", params={"filters": f"Name={name}"})
    assert len(listed.json()["Suites"]) == 1  # the request was committed before the reset
    assert server.faults.counters["POST /api/Suites"] == 1
    assert server.faults.counters["GET /api/Suites"] == 2


async def test_data_survives_a_restart(tmp_path: Path) -> None:
    async with LocalComps(tmp_path) as first:
        password = first.initial_password
        assert password
        async with httpx.AsyncClient(
            base_url=first.url, headers={"X-COMPS-Token": first.token}
        ) as http:
            suite = (
                await http.post("/api/Suites", json={"Suites": [{"Name": "persisted"}]})
            ).json()["Ids"][0]
            await http.post(f"/api/Suites/{suite}/tags", json={"Tags": {"k": "v"}})
    async with LocalComps(tmp_path) as second:
        assert second.initial_password is None  # printed once, on first start only
        async with httpx.AsyncClient(base_url=second.url) as http:
            login = await http.post(
                "/api/tokens",
                json={
                    "Username": "local",
                    "Password": base64.b64encode(password.encode()).decode(),
                },
            )
            token = login.headers["X-COMPS-Token"]
            got = await http.get(
                f"/api/Suites/{suite}",
                params={"children": "Tags"},
                headers={"X-COMPS-Token": token},
            )
            assert got.json()["Suites"][0]["Tags"] == {"k": "v"}


async def test_fault_knobs_over_http(http: httpx.AsyncClient, server: LocalComps) -> None:
    response = await http.put(
        "/api/_local/faults", json={"error_429_rate": 1.0, "routes": "GET /api/Suites$"}
    )
    assert response.status_code == 200
    assert (await http.get("/api/Suites")).status_code == 429
    assert (await http.put("/api/_local/faults", json={"bogus": 1})).status_code == 400
    await http.put("/api/_local/faults", json={})
    counters = (await http.get("/api/_local/counters")).json()
    assert counters["Counters"]["GET /api/Suites"] >= 1 and counters["Injected"]["429"] >= 1


async def test_bandwidth_cap_paces_the_body(http: httpx.AsyncClient, server: LocalComps) -> None:
    body = json.dumps({"x": "y" * 60_000}).encode()
    md5 = md5_of(body)
    sims = [
        {
            "Name": "bw",
            "ExperimentId": await new_experiment(http),
            "Files": [{"FileName": "big.json", "MD5Checksum": md5}],
        }
    ]
    await http.post("/api/Simulations", files=multipart(sims, {md5: body}))
    server.faults.configure(FaultConfig(bandwidth_bytes_per_s=100_000, routes="GET /asset/blobs/"))
    started = anyio.current_time()
    response = await http.get(f"/asset/blobs/{md5}/big.json")
    elapsed = anyio.current_time() - started
    assert response.content == body
    assert elapsed >= len(body) / 100_000 * 0.9  # cannot be faster than the cap


async def test_the_upload_direction_is_capped_too(
    http: httpx.AsyncClient, server: LocalComps
) -> None:
    """A request body travels no faster than the connection's upload cap (WAN emulation)."""
    data = os.urandom(300_000)
    md5 = md5_of(data)
    server.faults.configure(
        FaultConfig(upload_bandwidth_bytes_per_s=1_000_000, routes="POST /api/upload/")
    )
    started = anyio.current_time()
    response = await http.post(
        f"/api/upload/{md5}",
        content=data,
        headers={"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"},
    )
    elapsed = anyio.current_time() - started
    assert response.status_code == 200, response.text
    assert elapsed >= len(data) / 1_000_000 * 0.9


async def test_the_shared_cap_holds_across_connections(
    http: httpx.AsyncClient, server: LocalComps
) -> None:
    """Four downloads at once, each allowed 10 MB/s, share a 1 MB/s link: together they take
    at least as long as the link needs for all their bytes."""
    body = os.urandom(100_000)
    md5 = md5_of(body)
    sims = [
        {
            "Name": "shared",
            "ExperimentId": await new_experiment(http),
            "Files": [{"FileName": "b.bin", "MD5Checksum": md5}],
        }
    ]
    await http.post("/api/Simulations", files=multipart(sims, {md5: body}))
    server.faults.configure(
        FaultConfig(
            bandwidth_bytes_per_s=10_000_000,
            total_bandwidth_bytes_per_s=1_000_000,
            routes="GET /asset/blobs/",
        )
    )
    token = {"X-COMPS-Token": server.token}
    async with httpx.AsyncClient(base_url=server.url, headers=token) as other:  # 4 connections
        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(other.get, f"/asset/blobs/{md5}/b.bin")
        elapsed = anyio.current_time() - started
    assert elapsed >= 4 * len(body) / 1_000_000 * 0.9


def test_the_wan_profile() -> None:
    wan = FaultConfig.wan()
    assert (wan.latency_s, wan.bandwidth_bytes_per_s, wan.upload_bandwidth_bytes_per_s) == (
        0.08,
        20e6,
        20e6,
    )
    assert wan.total_bandwidth_bytes_per_s == 200e6


async def test_updates_merge_what_they_send(http: httpx.AsyncClient) -> None:
    """idmtools updates an experiment with only {"Configuration": {"AssetCollectionId": ...}}
    and relies on COMPS keeping the rest (issue 20): keys sent replace, others stay."""
    config = {"EnvironmentName": "Local", "ExecutablePath": "python3", "SimulationInputArgs": "x"}
    saved = await http.post(
        "/api/Experiments",
        json={"Experiments": [{"Name": "e", "Description": "keep me", "Configuration": config}]},
    )
    exp_id = saved.json()["Ids"][0]
    collection = str(uuid4())
    await http.post(
        "/api/Experiments",
        json={"Experiments": [{"Id": exp_id, "Configuration": {"AssetCollectionId": collection}}]},
    )
    got = await http.get(f"/api/Experiments/{exp_id}", params={"children": "Configuration"})
    (experiment,) = got.json()["Experiments"]
    assert experiment["Name"] == "e" and experiment["Description"] == "keep me"
    assert experiment["Configuration"] == {**config, "AssetCollectionId": collection}


def test_the_built_in_model_starts_without_importing_the_sdk(tmp_path: Path) -> None:
    """``sir_configuration`` runs the model by path: a simulation must not pay for importing
    comps_async (httpx, pydantic, ...) every time it starts."""
    (tmp_path / "config.json").write_text(json.dumps({"parameters": {"Simulation_Duration": 30}}))
    args = shlex.split(sir_configuration().simulation_input_args or "")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert not {m for m in imported if m.split(".")[0] in ("comps_async", "httpx", "pydantic")}
    assert (tmp_path / "output" / "InsetChart.json").exists()


def test_the_built_in_model_has_an_epidemic_without_a_campaign() -> None:
    config = {"parameters": {"Simulation_Duration": 120, "Base_Infectivity": 0.6}}
    bare = simulate(config, {})["Channels"]["Infected"]["Data"]
    assert max(bare) > 0.05  # seeded at 0.1%: it spreads
    no_outbreak = simulate(config, {"Events": []})["Channels"]["Infected"]["Data"]
    assert max(no_outbreak) == 0  # a campaign without an outbreak infects nobody, as in EMOD
