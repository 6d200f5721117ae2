"""Request shapes, retries, auth and error paths, pinned with respx (no server)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import ssl
import stat
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest
import respx

import comps_async as ca
from comps_async._transfer.upload import Uploader
from comps_async.pipeline import CallNext

from helpers import make_token

pytestmark = pytest.mark.anyio

HOST = "http://comps.test"
SIM = UUID("dfc932fb-6c79-ec11-a9f2-9440c9be2c51")


def Session(*args: object, **kwargs: object) -> ca.Session:
    """ca.Session on httpx's own transport, which respx intercepts."""
    kwargs.setdefault("transport", httpx.AsyncHTTPTransport())
    return ca.Session(*args, **kwargs)  # type: ignore[arg-type]


class NoSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def mock() -> respx.MockRouter:
    with respx.mock(base_url=HOST, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[ca.Session]:
    async with Session(
        HOST, token=make_token(), token_cache_dir=tmp_path, retry=ca.RetryPolicy(sleep=NoSleep())
    ) as s:
        yield s


async def test_get_sends_the_protocol_request(mock: respx.MockRouter, session: ca.Session) -> None:
    route = mock.get(f"/api/Simulations/{SIM}").respond(
        json={"Simulations": [{"Id": str(SIM), "SimulationState": "Running"}]}
    )
    sim = await session.simulations.get(SIM, children=["tags", "hpc_jobs"])
    assert sim.state is ca.SimulationState.Running
    request = route.calls.last.request
    assert request.url.params["children"] == "Tags,HPCJobs"
    assert request.headers["X-COMPS-Token"].split(",")[2] == "jdoe"
    assert request.headers["Accept"] == "application/json"


async def test_iterate_pages_past_the_server_cap(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    total, cap = 100_050, 100_000

    def page(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params.get("offset", 0))
        count = min(int(request.url.params["count"]), cap)
        rows = [{"Id": str(UUID(int=i))} for i in range(offset, min(offset + count, total))]
        headers = {"Content-Range": f"items {offset}-{offset + len(rows) - 1}/{total}"}
        return httpx.Response(200, json={"Simulations": rows}, headers=headers)

    route = mock.get("/api/Simulations").mock(side_effect=page)
    seen = [s.id async for s in session.simulations.iterate(page_size=200_000)]
    assert len(seen) == total and len(set(seen)) == total
    assert seen[-1] == UUID(int=total - 1)
    # offset=0 is left out, as pyCOMPS leaves it out
    assert [c.request.url.params.get("offset") for c in route.calls] == [None, "100000"]


async def test_count_and_list_honour_query_count(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    mock.get("/api/Experiments").mock(
        side_effect=lambda r: httpx.Response(
            200,
            json={"Experiments": [{"Id": str(uuid4())}] * int(r.url.params["count"])},
            headers={"Content-Range": f"items 0-0/{1234}"},
        )
    )
    assert await session.experiments.count(ca.Query().where(["owner=jdoe"])) == 1234
    listed = await session.experiments.list(ca.Query().count(3))
    assert len(listed) == 3


async def test_tags_state_and_delete_shapes(mock: respx.MockRouter, session: ca.Session) -> None:
    tags = mock.post(f"/api/Simulations/{SIM}/tags").respond(json={})
    state = mock.put(url__regex=rf"/api/Simulations/{SIM}/State/\w+").respond(json={})
    delete = mock.delete(f"/api/Simulations/{SIM}").respond(json={})
    await session.simulations.merge_tags(SIM, {"a": 1, "flag": None})
    await session.simulations.delete_tags(SIM, ["a"])
    await session.simulations.commission(SIM)
    await session.simulations.cancel([SIM, str(SIM)])
    await session.simulations.delete(SIM, expire_now=True)
    assert [json.loads(c.request.content) for c in tags.calls] == [
        {"Tags": {"a": 1, "flag": None}, "OperationMode": "Merge"},
        {"Tags": {"a": None}, "OperationMode": "Delete"},
    ]
    assert [c.request.url.path.rsplit("/", 1)[1] for c in state.calls] == [
        "CommissionRequested",
        "CancelRequested",
        "CancelRequested",
    ]
    assert delete.calls.last.request.url.params["expirenow"] == "True"


async def test_bad_input_sends_nothing(mock: respx.MockRouter, session: ca.Session) -> None:
    with pytest.raises(ValueError, match="not a valid id"):
        await session.simulations.get("nope")
    with pytest.raises(ValueError, match="no child"):
        await session.experiments.get(SIM, children=["files"])
    with pytest.raises(ValueError, match="malformed filter"):
        await session.simulations.list(ca.Query().where(["state"]))
    with pytest.raises(ValueError, match="non-negative"):
        await session.simulations.list(ca.Query().count(-1))
    with pytest.raises(ValueError, match="tag 'x'"):
        await session.simulations.merge_tags(SIM, {"x": [1, 2]})
    assert not mock.calls


async def test_server_errors_are_typed(mock: respx.MockRouter, session: ca.Session) -> None:
    mock.get(f"/api/Simulations/{SIM}").respond(
        404, json={"ResponseMessage": "no such simulation", "CorrelationId": "cid-7"}
    )
    with pytest.raises(ca.NotFoundError) as caught:
        await session.simulations.get(SIM)
    assert caught.value.status == 404 and caught.value.correlation_id == "cid-7"
    assert caught.value.message == "no such simulation"
    mock.get("/api/Suites").respond(500, text="<html>oops</html>")
    with pytest.raises(ca.ServerError, match="oops"):
        await session.suites.list()


async def test_idempotent_calls_retry_with_retry_after(
    mock: respx.MockRouter, tmp_path: Path
) -> None:
    sleep = NoSleep()
    route = mock.get(f"/api/Simulations/{SIM}").mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "2"}),
            httpx.Response(429, headers={"Retry-After-Ms": "1500"}),
            httpx.ConnectError("refused"),
            httpx.Response(200, json={"Simulations": [{"Id": str(SIM)}]}),
        ]
    )
    async with Session(
        HOST, token=make_token(), token_cache_dir=tmp_path, retry=ca.RetryPolicy(sleep=sleep)
    ) as s:
        await s.simulations.get(SIM)
    assert route.call_count == 4
    assert sleep.waits[:2] == [2.0, 1.5] and 0 <= sleep.waits[2] <= 1.0


class FakeExperiments:
    """POST /api/Experiments that may commit and then lose its answer, and the exact-match
    lookup by tag; ``answers`` says, per POST, what the client gets after the commit."""

    def __init__(self, mock: respx.MockRouter, answers: list[object]) -> None:
        self.stored: list[dict[str, object]] = []
        self.answers = answers
        self.lookups: list[str] = []
        self.post = mock.post("/api/Experiments").mock(side_effect=self._save)
        self.get = mock.get("/api/Experiments").mock(side_effect=self._list)

    def _save(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers.pop(0)
        if answer == "refuse":
            return httpx.Response(400, json={"ResponseMessage": "no"})
        if answer == "unavailable":  # refused before anything was stored
            return httpx.Response(503)
        entity = json.loads(request.content)["Experiments"][0]
        new_id = str(uuid4())
        self.stored.append({**entity, "Id": new_id})
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json={"Ids": [new_id]})

    def _list(self, request: httpx.Request) -> httpx.Response:
        tag_filter = request.url.params["tagfilters"]
        self.lookups.append(tag_filter)
        key, _, value = tag_filter.partition("=")
        rows = [e for e in self.stored if e["Tags"].get(key) == value]  # type: ignore[attr-defined]
        return httpx.Response(200, json={"Experiments": rows})


@pytest.mark.parametrize(
    "lost",
    [
        httpx.Response(503),
        httpx.ReadError("reset after commit"),
        httpx.Response(200, text="<html>proxy says hi</html>"),
        httpx.Response(200, json={"Ids": []}),
    ],
    ids=["503", "reset", "garbled-2xx", "wrong-count"],
)
async def test_a_create_whose_answer_is_lost_is_looked_up_not_repeated(
    mock: respx.MockRouter, session: ca.Session, lost: object
) -> None:
    fake = FakeExperiments(mock, [lost])
    exp = await session.experiments.create(ca.Experiment(name="e"))
    assert fake.post.call_count == 1 and len(fake.stored) == 1  # found, not created again
    assert str(exp.id) == fake.stored[0]["Id"]
    group, key = fake.stored[0]["Tags"][ca.BATCH_TAG], fake.stored[0]["Tags"][ca.KEY_TAG]
    assert key == exp.idempotency_key and fake.lookups == [f"{ca.BATCH_TAG}={group}"]


@pytest.mark.parametrize(
    ("lost", "settles"),
    [(httpx.ReadError("reset"), True), (httpx.Response(504), True), (httpx.Response(503), False)],
    ids=["no-answer", "gateway-timeout", "server-answered"],
)
async def test_a_lookup_waits_for_a_request_the_server_may_still_hold(
    mock: respx.MockRouter, tmp_path: Path, lost: object, settles: bool
) -> None:
    sleep = NoSleep()
    async with Session(
        HOST, token=make_token(), token_cache_dir=tmp_path, retry=ca.RetryPolicy(sleep=sleep)
    ) as s:
        FakeExperiments(mock, [lost])
        await s.experiments.create(ca.Experiment(name="e"))
    # Backoff waits are at most 0.4 s here; only a settle waits about SETTLE_S (2 s).
    assert any(w > 1.0 for w in sleep.waits) == settles


async def test_a_create_that_did_not_land_is_sent_again_with_the_same_key(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    fake = FakeExperiments(mock, ["unavailable", None])
    exp = await session.experiments.create(ca.Experiment(name="e"))
    assert fake.post.call_count == 2 and len(fake.stored) == 1 and len(fake.lookups) == 1
    bodies = [json.loads(c.request.content)["Experiments"][0]["Tags"] for c in fake.post.calls]
    assert bodies[0] == bodies[1] and bodies[0][ca.KEY_TAG] == exp.idempotency_key
    assert str(exp.id) == fake.stored[0]["Id"]


async def test_an_unknown_outcome_is_reported_and_the_same_call_finishes_it(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    fake = FakeExperiments(mock, [httpx.ReadError("reset after commit")])
    fake.get.side_effect = httpx.Response(503)  # the lookup cannot be answered
    experiment = ca.Experiment(name="e")
    with pytest.raises(ca.OutcomeUnknownError) as caught:
        await session.experiments.create(experiment)
    assert caught.value.key == experiment.idempotency_key is not None
    assert experiment.id is None and len(fake.stored) == 1
    fake.get.side_effect = fake._list  # the server answers again: the documented recovery
    await session.experiments.create(experiment)
    assert len(fake.stored) == 1 and str(experiment.id) == fake.stored[0]["Id"]


async def test_a_definite_refusal_is_raised_as_is(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    fake = FakeExperiments(mock, ["refuse"])
    with pytest.raises(ca.ApiError) as caught:
        await session.experiments.create(ca.Experiment(name="e"))
    assert caught.value.status == 400 and fake.lookups == []


async def test_a_caller_key_is_looked_up_first_and_reused(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    fake = FakeExperiments(mock, [None])
    first = await session.experiments.create(ca.Experiment(name="e"), key="calib-3")
    again = await session.experiments.create(ca.Experiment(name="e"), key="calib-3")
    assert first.id == again.id and fake.post.call_count == 1 and len(fake.lookups) == 2
    assert fake.stored[0]["Tags"] == {ca.BATCH_TAG: "calib-3/0", ca.KEY_TAG: "calib-3/0"}
    with pytest.raises(ca.KeyConflictError, match="calib-3"):
        await session.experiments.create(ca.Experiment(name="other"), key="calib-3")
    for bad in ["", "a,b", "a=b", "with space", "x" * 101, "a/b"]:
        with pytest.raises(ValueError, match="letters, digits"):
            await session.experiments.create(ca.Experiment(name="e"), key=bad)
    assert fake.post.call_count == 1


async def test_without_idempotency_tags_a_lost_answer_is_resent(
    mock: respx.MockRouter, tmp_path: Path
) -> None:
    async with Session(
        HOST,
        token=make_token(),
        token_cache_dir=tmp_path,
        retry=ca.RetryPolicy(sleep=NoSleep()),
        idempotency_tags=False,
    ) as s:
        fake = FakeExperiments(mock, [httpx.ReadError("reset after commit"), None])
        await s.experiments.create(ca.Experiment(name="e", tags={"t": "1"}))
        with pytest.raises(ValueError, match="idempotency_tags"):
            await s.experiments.create(ca.Experiment(name="e"), key="k")
    # At least once, as documented: no tag, no lookup, and the lost create is duplicated.
    assert fake.lookups == [] and len(fake.stored) == 2
    assert all(e["Tags"] == {"t": "1"} for e in fake.stored)


async def test_a_post_that_never_left_is_retried(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    route = mock.post("/api/Experiments").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(429),
            httpx.Response(200, json={"Ids": [str(SIM)]}),
        ]
    )
    exp = await session.experiments.create(ca.Experiment(name="e"))
    assert exp.id == SIM and route.call_count == 3


async def test_retries_give_up_with_the_typed_error(mock: respx.MockRouter, tmp_path: Path) -> None:
    route = mock.get("/api/Suites").respond(502, json={"ResponseMessage": "bad gateway"})
    async with Session(
        HOST,
        token=make_token(),
        token_cache_dir=tmp_path,
        retry=ca.RetryPolicy(max_attempts=3, sleep=NoSleep()),
    ) as s:
        with pytest.raises(ca.ServerError, match="bad gateway"):
            await s.suites.list()
        assert route.call_count == 3
        with pytest.raises(ca.ServerError):  # per-call override
            await s.request("GET", "Suites", max_attempts=1)
        assert route.call_count == 4


async def test_per_call_timeout_reaches_httpx(mock: respx.MockRouter, session: ca.Session) -> None:
    route = mock.get("/api/Suites").respond(json={"Suites": []})
    await session.request("GET", "Suites", timeout=1.5)
    assert route.calls.last.request.extensions["timeout"]["read"] == 1.5


async def test_a_calls_own_headers_replace_the_defaults(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    """Headers given to a call replace the SDK's defaults whatever their case (one of each on
    the wire), and leave the defaults of later calls as they were."""
    route = mock.get("/api/Suites").respond(json={"Suites": []})
    await session.request("GET", "Suites", headers={"content-type": "text/csv", "ACCEPT": "*/*"})
    request = route.calls.last.request
    assert request.headers.get_list("Content-Type") == ["text/csv"]
    assert request.headers.get_list("Accept") == ["*/*"]
    await session.request("GET", "Suites")
    request = route.calls.last.request
    assert request.headers.get_list("Content-Type") == ["application/json"]
    assert request.headers.get_list("Accept") == ["application/json"]


async def test_login_renew_and_relogin_on_401(mock: respx.MockRouter, tmp_path: Path) -> None:
    first, second = make_token(tag="one"), make_token(tag="two")
    tokens = mock.post("/api/tokens").mock(
        side_effect=[
            httpx.Response(200, headers={"X-COMPS-Token": first}),
            httpx.Response(200, json={"Token": second}),
        ]
    )
    calls = mock.get("/api/Suites").mock(
        side_effect=[
            httpx.Response(401, json={"ResponseMessage": "expired"}),
            httpx.Response(200, json={"Suites": []}),
        ]
    )
    async with Session(HOST, username="jdoe", password="s3cret!", token_cache_dir=tmp_path) as s:
        assert await s.suites.list() == []
        assert "s3cret" not in repr(s) and "s3cret" not in repr(s.tokens)
    body = json.loads(tokens.calls[0].request.content)
    assert body == {
        "Username": "jdoe",
        "Password": base64.b64encode(b"s3cret!").decode(),
        "ClientVersion": 12,
    }
    assert "X-COMPS-Token" not in tokens.calls[0].request.headers
    assert calls.calls[0].request.headers["X-COMPS-Token"] == first
    assert calls.calls[1].request.headers["X-COMPS-Token"] == second
    cache = next(tmp_path.glob("COMPS_Authtoken_http___comps.test_*.txt"))
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert cache.read_text() == second


async def test_the_token_cache_is_private_whatever_the_machine(
    mock: respx.MockRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "run"  # a CI machine's XDG_RUNTIME_DIR, writable by everyone
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ca.auth.token_cache_dir() == tmp_path / "home" / ".cache" / "comps_async"
    shared.chmod(0o700)
    assert ca.auth.token_cache_dir() == shared
    # A stale temporary file with a loose mode, and a planted cache file: neither is used.
    mock.post("/api/tokens").respond(headers={"X-COMPS-Token": make_token(tag="fresh")})
    mock.get("/api/Suites").respond(json={"Suites": []})
    async with Session(HOST, username="jdoe", password="pw", token_cache_dir=shared) as s:
        stale = s.tokens.cache_file.with_suffix(".tmp")
        stale.write_text("old")
        stale.chmod(0o644)
        await s.suites.list()
    cache = s.tokens.cache_file
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600 and "fresh" in cache.read_text()
    shared.chmod(0o777)  # the directory became shared: nothing is read from or written there
    cache.write_text(make_token(tag="planted"))
    async with Session(HOST, username="jdoe", password="pw", token_cache_dir=shared) as s:
        await s.suites.list()
    assert "planted" in cache.read_text()  # not overwritten ...
    assert mock.routes[0].call_count == 2  # ... and not used: a fresh login instead


async def test_a_system_token_is_never_renewed(mock: respx.MockRouter, tmp_path: Path) -> None:
    # 10 minutes left: a user token would be renewed now; a system token cannot be (§2.4).
    system = make_token(
        kind="System", lifetime=timedelta(minutes=10), created_ago=timedelta(hours=3, minutes=50)
    )
    renew = mock.put("/api/tokens").respond(401)
    suites = mock.get("/api/Suites").respond(json={"Suites": []})
    async with Session(HOST, token=system, token_cache_dir=tmp_path) as s:
        assert await s.suites.list() == []
    assert not renew.called and suites.calls.last.request.headers["X-COMPS-Token"] == system
    expired = make_token(kind="System", lifetime=timedelta(seconds=-1))
    async with Session(HOST, token=expired, token_cache_dir=tmp_path) as s:
        await s.suites.list()  # no credentials: the server judges it, the SDK does not raise
    assert not renew.called


async def test_a_token_near_expiry_is_renewed(mock: respx.MockRouter, tmp_path: Path) -> None:
    # 10 minutes left of a 4-hour token: inside the 30-minute renewal window.
    old = make_token(
        lifetime=timedelta(minutes=10), created_ago=timedelta(hours=3, minutes=50), tag="old"
    )
    new = make_token(tag="new")
    renew = mock.put("/api/tokens").respond(headers={"X-COMPS-Token": new})
    suites = mock.get("/api/Suites").respond(json={"Suites": []})
    async with Session(HOST, token=old, token_cache_dir=tmp_path) as s:
        await s.suites.list()
    assert renew.calls.last.request.headers["X-COMPS-Token"] == old
    assert json.loads(renew.calls.last.request.content) == {"ClientVersion": 12}
    assert suites.calls.last.request.headers["X-COMPS-Token"] == new


async def test_bad_credentials_fail_without_leaking(mock: respx.MockRouter, tmp_path: Path) -> None:
    mock.post("/api/tokens").respond(401, json={"ResponseMessage": "Bad username/password"})
    async with Session(HOST, username="jdoe", password="hunter2", token_cache_dir=tmp_path) as s:
        with pytest.raises(ca.AuthenticationError) as caught:
            await s.suites.list()
    assert "hunter2" not in str(caught.value) and "Bad username" in str(caught.value)


async def test_prompt_is_asked_at_most_three_times(mock: respx.MockRouter, tmp_path: Path) -> None:
    mock.post("/api/tokens").respond(401, json={"ResponseMessage": "Bad username/password"})
    asked: list[str] = []

    async def prompt(host: str) -> tuple[str, str]:
        asked.append(host)
        return "jdoe", "wrong"

    async with Session(HOST, credential_prompt=prompt, token_cache_dir=tmp_path) as s:
        with pytest.raises(ca.AuthenticationError):
            await s.suites.list()
    assert asked == [HOST] * 3


async def test_environment_fallbacks_and_explicit_wins(
    monkeypatch: pytest.MonkeyPatch, mock: respx.MockRouter, tmp_path: Path
) -> None:
    monkeypatch.setenv("COMPS_SERVER", HOST)
    monkeypatch.setenv("COMPS_TOKEN", make_token(user="fromenv"))
    route = mock.get("/api/Suites").respond(json={"Suites": []})
    async with Session(token_cache_dir=tmp_path) as s:
        await s.suites.list()
    assert route.calls.last.request.headers["X-COMPS-Token"].split(",")[2] == "fromenv"
    async with Session(token=make_token(user="explicit"), token_cache_dir=tmp_path) as s:
        await s.suites.list()
    assert route.calls.last.request.headers["X-COMPS-Token"].split(",")[2] == "explicit"
    monkeypatch.delenv("COMPS_SERVER")
    with pytest.raises(ValueError, match="COMPS_SERVER"):
        Session()
    assert os.environ.get("COMPS_SERVER") is None


async def test_a_custom_policy_in_one_line(mock: respx.MockRouter, tmp_path: Path) -> None:
    class Counting:
        def __init__(self) -> None:
            self.seen: list[str] = []

        async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
            self.seen.append(f"{request.method} {request.url.path}")
            return await call_next(request)

    counter = Counting()
    mock.get("/api/Suites").respond(json={"Suites": []})
    async with Session(HOST, token=make_token(), policies=[counter], token_cache_dir=tmp_path) as s:
        await s.suites.list()
        await s.suites.list()
    assert counter.seen == ["GET /api/Suites"] * 2
    with pytest.raises(TypeError, match="not a Policy"):
        async with Session(
            HOST,
            token=make_token(),
            policies=[object()],  # type: ignore[list-item]
            token_cache_dir=tmp_path,
        ):
            pass


@pytest.fixture(scope="module")
def self_signed_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"Suites": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


async def test_tls_is_verified_by_default(self_signed_https: str, tmp_path: Path) -> None:
    # The default transport (aiohttp under asyncio, httpx under trio) must refuse the cert ...
    async with ca.Session(
        self_signed_https,
        token=make_token(),
        token_cache_dir=tmp_path,
        retry=ca.RetryPolicy(max_attempts=1),
    ) as s:
        with pytest.raises(ca.TransferError):
            await s.suites.list()
    # ... and talks to it only when told not to verify.
    async with ca.Session(
        self_signed_https, token=make_token(), token_cache_dir=tmp_path, verify=False
    ) as s:
        assert await s.suites.list() == []


def _parts(request: httpx.Request) -> list[tuple[str, str | None, str, bytes]]:
    """(name, filename, content type, body) of each multipart part."""
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode() + request.content
    )
    return [
        (
            part.get_param("name", header="content-disposition"),
            part.get_filename(),
            part.get_content_type(),
            part.get_payload(decode=True),
        )
        for part in message.iter_parts()
    ]


async def test_batch_save_multipart_layout(mock: respx.MockRouter, session: ca.Session) -> None:
    route = mock.post("/api/Simulations").mock(
        side_effect=lambda r: httpx.Response(200, json={"Ids": [str(uuid4()), str(uuid4())]})
    )
    config = b'{"parameters": {}}'
    shared = ca.SimulationFile.from_bytes("config.json", config)
    sims = [
        ca.Simulation(
            name=f"s{i}",
            experiment_id=SIM,
            tags={"i": i},
            files=[shared, ca.SimulationFile.from_md5("big.bin", SIM)],
        )
        for i in range(2)
    ]
    await session.simulations.save_all(sims)
    parts = _parts(route.calls.last.request)
    name, filename, ctype, body = parts[0]
    assert (name, filename, ctype) == ("not_a_file", "Simulations", "application/json")
    entities = json.loads(body)
    assert [e["Name"] for e in entities] == ["s0", "s1"]
    assert entities[0]["ExperimentId"] == str(SIM)
    assert entities[0]["Files"] == [
        {
            "FileName": "config.json",
            "MD5Checksum": str(shared.md5_checksum),
            "FileType": "input",
            "Description": "",
        },
        {"FileName": "big.bin", "MD5Checksum": str(SIM), "FileType": "input", "Description": ""},
    ]
    assert entities[0]["Tags"]["i"] == 0 and ca.BATCH_TAG in entities[0]["Tags"]
    assert [e["Owner"] for e in entities] == ["jdoe", "jdoe"]  # as pyCOMPS (§8.2)
    bare = ca.Simulation(name="bare", experiment_id=SIM)
    route.side_effect = lambda r: httpx.Response(200, json={"Ids": [str(uuid4())]})
    await session.simulations.save(bare)
    (entity,) = json.loads(_parts(route.calls.last.request)[0][3])
    assert entity["Files"] == [] and "Files" not in bare.to_save_wire()  # "Files": [] (§4.5)
    # Shared content is attached once per batch, named by its md5; md5-only files get no part.
    assert [(p[0], p[1], p[2], p[3]) for p in parts[1:]] == [
        (str(shared.md5_checksum), "config.json", "application/json", config)
    ]


async def test_json_saves_and_upload_shapes(mock: respx.MockRouter, session: ca.Session) -> None:
    saves = mock.post("/api/Experiments").respond(json={"Ids": [str(SIM)]})
    exp = await session.experiments.create(
        ca.Experiment(
            name="e",
            description="d",
            tags={"t": "1"},
            configuration=ca.Configuration(
                environment_name="Calculon", priority=ca.Priority.Lowest, max_cores=1, min_cores=1
            ),
        )
    )
    assert exp.idempotency_key is not None
    group = exp.idempotency_key.rsplit("/", 1)[0] + "/0"
    assert json.loads(saves.calls.last.request.content) == {
        "Experiments": [
            {
                "Tags": {"t": "1", ca.BATCH_TAG: group, ca.KEY_TAG: exp.idempotency_key},
                "Name": "e",
                "Description": "d",
                "Owner": "jdoe",  # the logged-in user, as pyCOMPS sends it (§6.1)
                "Configuration": {
                    "EnvironmentName": "Calculon",
                    "Priority": "Lowest",
                    "MinCores": 1,
                    "MaxCores": 1,
                },
            }
        ]
    }
    exp.name = "renamed"
    await session.experiments.save(exp)
    assert json.loads(saves.calls.last.request.content) == {
        "Experiments": [{"Id": str(SIM), "Name": "renamed", "Description": "d"}]
    }  # tags are never sent on update (§6.1), Configuration only when changed (§8.5)
    exp.configuration = ca.Configuration(environment_name="Calculon", max_cores=2)
    await session.experiments.save(exp)
    assert json.loads(saves.calls.last.request.content)["Experiments"][0]["Configuration"] == {
        "EnvironmentName": "Calculon",
        "MaxCores": 2,
    }
    related = mock.post(url__regex=r"/api/WorkItems/.+/Related/.+").respond(json={})
    await session.work_items.add_related(SIM, exp, ca.RelationType.Created)
    assert (
        related.calls.last.request.url.path
        == f"/api/WorkItems/{SIM}/Related/Created/Experiment/{SIM}"
    )
    check = mock.get(f"/api/upload/check/{SIM}").respond(206, json={"Size": 3})
    chunk = mock.post(f"/api/upload/{SIM}").respond(json={})
    sent = await _uploader(session).upload(ca.models.ContentSource(data=b"abcdefgh"), SIM, 8)
    assert sent == 5 and check.called
    request = chunk.calls.last.request
    assert request.headers["Content-Range"] == "bytes 3-7/8"
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.content == b"defgh"


async def test_asset_collections_as_pycomps_saves_them(
    mock: respx.MockRouter, session: ca.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small files travel in the save, as pyCOMPS sends them: one request, never refused."""
    monkeypatch.setenv("COMPS_ENVIRONMENT", "Calculon")
    mock.get("/api/Environments/Calculon").respond(
        json={"Environments": [{"EnvironmentName": "Calculon", "GroupName": "idm-group"}]}
    )
    content = b'{"a": 1}'
    md5 = str(ca.models.md5_uuid(content))
    saves = mock.post("/api/AssetCollections").respond(json={"Ids": [str(SIM)]})
    collection = await session.asset_collections.create(
        [ca.AssetCollectionFile.from_bytes("input.json", content)]
    )
    assert collection.id == SIM
    (save,) = saves.calls
    parts = _parts(save.request)
    assert [(p[0], p[1], p[2]) for p in parts] == [
        ("not_a_file", "AssetCollections", "application/json"),
        (md5, "input.json", "application/json"),
    ]
    assert parts[1][3] == content
    assert save.request.url.params["groupnames"] == "idm-group"  # visible to the group


async def test_asset_collections_over_the_inline_size_ask_what_is_missing_first(
    mock: respx.MockRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above ``UploadSettings.inline_bytes`` the collection is saved by md5 only; the content
    the server names is sent in file-only requests and the save repeated (§8.3)."""
    monkeypatch.setenv("COMPS_ENVIRONMENT", "Calculon")
    mock.get("/api/Environments/Calculon").respond(
        json={"Environments": [{"EnvironmentName": "Calculon", "GroupName": "idm-group"}]}
    )
    content = b'{"a": 1}'
    md5 = str(ca.models.md5_uuid(content))
    saves = mock.post("/api/AssetCollections").mock(
        side_effect=[
            httpx.Response(400, json={"ResponseMessage": "missing", "UntrackedIds": [md5]}),
            httpx.Response(200, json={"Ids": []}),  # the file-only request
            httpx.Response(200, json={"Ids": [str(SIM)]}),
        ]
    )
    mock.get("/api/AssetCollections").respond(json={"AssetCollections": []})  # the look-up
    async with Session(
        HOST,
        token=make_token(),
        token_cache_dir=tmp_path,
        retry=ca.RetryPolicy(sleep=NoSleep()),
        upload=ca.UploadSettings(inline_bytes=len(content) - 1),
    ) as session:
        collection = await session.asset_collections.create(
            [ca.AssetCollectionFile.from_bytes("input.json", content)]
        )
    assert collection.id == SIM
    assert [len(_parts(c.request)) for c in saves.calls] == [1, 2, 1]  # md5 only, content, md5
    file_only = _parts(saves.calls[1].request)
    assert [(p[0], p[1], p[2]) for p in file_only[1:]] == [(md5, "input.json", "application/json")]
    final = saves.calls[2].request
    assert final.url.params["groupnames"] == "idm-group"  # visible to the environment's group
    assert saves.calls[0].request.url.params["groupnames"] == "idm-group"


def _uploader(session: ca.Session) -> Uploader:
    """The upload engine over the session's request layer (engines never see the Session)."""
    return Uploader(session._requester, ca.UploadSettings())


@pytest.mark.parametrize("status", [200, 204, 206])
async def test_only_200_from_upload_check_means_complete(
    mock: respx.MockRouter, session: ca.Session, status: int
) -> None:
    body = {"Size": 3} if status in (200, 206) else None
    mock.get(f"/api/upload/check/{SIM}").respond(status, json=body)
    chunk = mock.post(f"/api/upload/{SIM}").respond(json={})
    sent = await _uploader(session).upload(ca.models.ContentSource(data=b"abcdefgh"), SIM, 8)
    expected = {200: None, 204: "bytes 0-7/8", 206: "bytes 3-7/8"}[status]  # pyCOMPS's reading
    assert (chunk.calls.last.request.headers["Content-Range"] if chunk.called else None) == expected
    assert sent == (0 if status == 200 else 8 - (3 if status == 206 else 0))


async def test_updates_attach_only_the_files_they_add(
    mock: respx.MockRouter, session: ca.Session
) -> None:
    """A renamed simulation whose config was sent with its create sends no content again; one
    that adds a file sends that file's content only (pyCOMPS attaches only new files)."""

    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(_parts(request)[0][3])
        return httpx.Response(200, json={"Ids": [s.get("Id") or str(uuid4()) for s in sent]})

    saves = mock.post("/api/Simulations").mock(side_effect=answer)
    config = ca.SimulationFile.from_bytes("config.json", b'{"parameters": {}}')
    sims = [ca.Simulation(name=f"s{i}", experiment_id=SIM, files=[config]) for i in range(2)]
    await session.simulations.save_all(sims)
    assert len(_parts(saves.calls.last.request)) == 2  # the entities, the shared config
    for sim in sims:
        sim.name = f"{sim.name}-renamed"
    await session.simulations.save_all(sims)
    parts = _parts(saves.calls.last.request)
    assert len(parts) == 1 and [s["Name"] for s in json.loads(parts[0][3])] == [
        "s0-renamed",
        "s1-renamed",
    ]
    sims[1].files = [config, ca.SimulationFile.from_bytes("more.txt", b"more")]
    await session.simulations.save_all(sims)
    parts = _parts(saves.calls.last.request)
    assert [p[3] for p in parts[1:]] == [b"more"]
    assert [f["FileName"] for f in json.loads(parts[0][3])[0]["Files"]] == ["more.txt"]


async def test_updates_send_what_pycomps_sends(mock: respx.MockRouter, session: ca.Session) -> None:
    """An entity read from the server and changed: only the identifying fields, Configuration
    if it changed, Files only those added (§8.2); never Tags, Owner or unchanged parts."""
    md5 = str(uuid4())
    row = {
        "Id": str(SIM),
        "Name": "s0",
        "ExperimentId": str(SIM),
        "Owner": "jdoe",
        "Tags": {"a": "1"},
        "Configuration": {"MaxCores": 2},
        "Files": [{"FileName": "config.json", "MD5Checksum": md5, "FileType": "input"}],
    }
    mock.get(f"/api/Simulations/{SIM}").respond(json={"Simulations": [row]})
    saves = mock.post("/api/Simulations").respond(json={"Ids": [str(SIM)]})
    sim = await session.simulations.get(SIM, children=["tags", "configuration", "files"])
    assert await session.simulations.save_all([sim]) == 1 and not saves.called  # unchanged
    sim.name = "renamed"
    await session.simulations.save(sim)
    sent = json.loads(_parts(saves.calls.last.request)[0][3])[0]
    assert sent == {"Id": str(SIM), "Name": "renamed", "ExperimentId": str(SIM)}
    added = ca.SimulationFile.from_bytes("more.txt", b"x")
    sim.files = [*(sim.files or []), added]
    sim.configuration = ca.Configuration(max_cores=4)
    await session.simulations.save(sim)
    sent = json.loads(_parts(saves.calls.last.request)[0][3])[0]
    assert sent["Configuration"] == {"MaxCores": 4}
    assert [f["FileName"] for f in sent["Files"]] == ["more.txt"]  # not config.json again
    assert "Tags" not in sent and "Owner" not in sent
    wi_row = {
        "Id": str(SIM),
        "Name": "w",
        "Description": "d",
        "Tags": {"t": "1"},
        "Worker": {"Name": "GenericWorker", "Version": "1"},
        "EnvironmentName": "Local",
    }
    mock.get(f"/api/WorkItems/{SIM}").respond(json={"WorkItems": [wi_row]})
    wi_saves = mock.post("/api/WorkItems").respond(json={"Ids": [str(SIM)]})
    item = await session.work_items.get(SIM, children=["tags"])
    item.name = "w2"
    await session.work_items.save(item)
    sent = json.loads(_parts(wi_saves.calls.last.request)[0][3])[0]
    assert sent == {"Id": str(SIM), "Name": "w2", "Description": "d"}  # §6.4
