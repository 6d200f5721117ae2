"""A server that breaks in every way we have seen, on real sockets, against public entry points.

The property for every case: a typed ``CompsError`` within the configured deadline, no file
outside the destination, nothing half-written that looks complete (no target file unless it is
whole and verified). Each test is bounded in time.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import httpx
import pytest

import comps_async as ca

from helpers import make_token

pytestmark = pytest.mark.anyio

SIM = UUID("dfc932fb-6c79-ec11-a9f2-9440c9be2c51")
BOUND_S = 10.0  # every case must end, typed, well within this
GOOD = b"exactly ten"[:10]


class Conn:
    """One accepted connection: the parsed request and raw writes."""

    def __init__(
        self,
        sock: socket.socket,
        method: str,
        path: str,
        headers: dict[str, str],
        stopped: threading.Event,
    ):
        self.sock = sock
        self.method = method
        self.path = path
        self.headers = headers
        self.stopped = stopped

    def hold(self, seconds: float = BOUND_S) -> bool:
        """Keep the connection open without a word, until the server stops (True) or
        ``seconds`` pass: how a hostile server stalls."""
        return self.stopped.wait(seconds)

    def send(self, status: str, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        head = {"Content-Length": str(len(body)), "Content-Type": "application/json"}
        head.update(headers or {})
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        self.sock.sendall(f"HTTP/1.1 {status}\r\n{lines}\r\n".encode() + body)

    def json(self, value: object, status: str = "200 OK", **headers: str) -> None:
        self.send(status, json.dumps(value).encode(), headers)


Handler = Callable[[Conn], None]


class HostileServer:
    """Routes by path prefix to handlers that misbehave on purpose; one thread per connection,
    so a handler may block (a black hole) without stopping the others."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.read_bodies = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(BOUND_S)
            try:
                while not self._stop.is_set():
                    head = b""
                    while b"\r\n\r\n" not in head:
                        data = sock.recv(65536)
                        if not data:
                            return
                        head += data
                    raw, _, rest = head.partition(b"\r\n\r\n")
                    first, *lines = raw.decode("latin-1").split("\r\n")
                    method, target, _ = first.split(" ", 2)
                    headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
                    route = max((p for p in self.routes if target.startswith(p)), key=len)
                    if self.read_bodies:
                        length = int(headers.get("content-length", 0))
                        while len(rest) < length:
                            rest += sock.recv(65536)
                    self.routes[route](Conn(sock, method, target, headers, self._stop))
            except (OSError, ValueError):
                return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


def listing(*files: dict[str, object]) -> dict[str, object]:
    return {"Resources": [{"Type": "File", "PathFromRoot": ".", **f} for f in files]}


def output(name: str, path: str, length: int, md5: bytes | None = GOOD) -> dict[str, object]:
    return {
        "FriendlyName": name,
        "Length": length,
        "Url": f"/asset/download/{path}",
        "MD5": hashlib.md5(md5).hexdigest() if md5 is not None else None,
    }


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    server.routes["/"] = lambda c: c.json({"ResponseMessage": "no such route"}, "404 Not Found")
    yield server
    server.close()


@pytest.fixture
async def session(hostile: HostileServer, tmp_path: Path) -> AsyncIterator[ca.Session]:
    async with ca.Session(
        hostile.url,
        token=make_token(),
        token_cache_dir=tmp_path,
        timeout=httpx.Timeout(2.0),
        retry=ca.RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02),
        download=ca.DownloadSettings(stall_timeout_s=0.5, max_attempts=2, deadline_s=5.0),
    ) as s:
        yield s


def assert_nothing_escaped(root: Path, dest: Path) -> None:
    """Nothing outside ``dest`` under ``root`` but what the test made, and nothing in ``dest``
    that looks complete (only the scratch folder, if anything)."""
    outside = [p for p in root.rglob("*") if dest not in p.parents and p != dest]
    assert all(p.name.startswith("COMPS_Authtoken") or p.is_dir() for p in outside), outside
    published = [p for p in dest.rglob("*") if p.is_file() and ".comps-partial" not in p.parts]
    assert published == []


# --- downloads -------------------------------------------------------------------------------


def drip_forever(c: Conn) -> None:
    """The listed bytes, then more, one byte a while, for ever (no Content-Length)."""
    c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + GOOD)
    while not c.hold(0.05):  # a byte every 50 ms, until the server stops
        c.sock.sendall(b"x")


def endless_length(c: Conn) -> None:
    """The listed bytes under a Content-Length of 10^12, then a byte a while, for ever."""
    c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n" + GOOD)
    while not c.hold(0.05):
        c.sock.sendall(b"x")


def stall(c: Conn) -> None:
    """Headers and a few bytes, then silence."""
    c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nexa")
    c.hold()


def black_hole(c: Conn) -> None:
    c.hold()


def short_length(c: Conn) -> None:
    """A Content-Length shorter than the body that follows."""
    c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n" + GOOD + b"garbage")


def wrong_bytes(c: Conn) -> None:
    c.send("200 OK", b"0123456789")


async def test_a_drip_past_the_listed_length_stops_there(
    hostile: HostileServer, session: ca.Session, tmp_path: Path
) -> None:
    hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c: c.json(
        listing(output("f.txt", "drip", 10))
    )
    hostile.routes["/asset/download/drip"] = drip_forever
    with anyio.fail_after(BOUND_S):
        (path,) = await session.outputs.download(SIM, ["f.txt"], tmp_path / "dest")
        assert await session.outputs.read(SIM, "f.txt") == GOOD
    assert path.read_bytes() == GOOD


async def test_an_answer_declaring_another_length_than_listed_is_refused(
    hostile: HostileServer, session: ca.Session, tmp_path: Path
) -> None:
    """Listed with a length and no md5, answered with a Content-Length of 10^12: not the listed
    file. Refused with a typed error before a byte is kept; nothing is published."""
    hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c: c.json(
        listing(output("f.txt", "endless", 10, md5=None))
    )
    hostile.routes["/asset/download/endless"] = endless_length
    dest = tmp_path / "dest"
    with anyio.fail_after(BOUND_S), pytest.raises(ca.ChecksumMismatchError, match="declared"):
        await session.outputs.download(SIM, ["f.txt"], dest)
    published = [p for p in dest.rglob("*") if p.is_file() and ".comps-partial" not in p.parts]
    assert published == []


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (stall, ca.TransferError),
        (black_hole, ca.TransferError),
        (short_length, ca.CompsError),
        (wrong_bytes, ca.ChecksumMismatchError),
    ],
    ids=["stall", "black-hole", "short-content-length", "wrong-md5"],
)
async def test_broken_downloads_end_typed_and_publish_nothing(
    hostile: HostileServer,
    session: ca.Session,
    tmp_path: Path,
    handler: Handler,
    error: type[Exception],
) -> None:
    hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c: c.json(
        listing(output("f.txt", "bad", 10))
    )
    hostile.routes["/asset/download/bad"] = handler
    dest = tmp_path / "dest"
    entry_points = [
        lambda: session.outputs.download(SIM, ["f.txt"], dest),
        lambda: session.outputs.read(SIM, "f.txt"),
        lambda: _harvest_one(session, dest),
    ]
    for call in entry_points:
        started = time.monotonic()
        with anyio.fail_after(BOUND_S), pytest.raises(error):
            await call()
        assert time.monotonic() - started < 6.0  # the per-file deadline is 5 s
    assert_nothing_escaped(tmp_path, dest)


async def _harvest_one(session: ca.Session, dest: Path) -> None:
    async with session.outputs.harvest([ca.Simulation(id=SIM)], ["*"], dest) as results:
        async for got in results:
            if got.error is not None:
                raise got.error


async def test_server_names_that_leave_the_destination_write_nothing(
    hostile: HostileServer, session: ca.Session, tmp_path: Path
) -> None:
    names = ["../../evil.txt", "/etc/evil", "C:\\evil.txt", "a\x00b", ".comps-partial/x"]
    for name in names:
        hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c, n=name: c.json(
            {"Resources": [{**output("x", "ok", 10), "FriendlyName": n, "PathFromRoot": "."}]}
        )
        hostile.routes["/asset/download/ok"] = lambda c: c.send("200 OK", GOOD)
        dest = tmp_path / "dest"
        with anyio.fail_after(BOUND_S), pytest.raises(ca.CompsError):
            await session.outputs.download(SIM, None, dest)
    assert_nothing_escaped(tmp_path, dest)


async def test_zip_slip_writes_nothing_outside(
    hostile: HostileServer, session: ca.Session, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ok.txt", "fine")
        archive.writestr("../../slipped.txt", "evil")
    data = buffer.getvalue()
    hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c: (
        c.json({"Resources": [{**output("z.zip", "zip", len(data), data)}]})
        if c.method == "POST"
        else c.json(listing(output("ok.txt", "ok", 10)))
    )
    hostile.routes["/asset/download/zip"] = lambda c: c.send("200 OK", data)
    with anyio.fail_after(BOUND_S), pytest.raises(ca.UnsafePathError):
        await session.outputs.zip(SIM, None, tmp_path / "a.zip", extract_to=tmp_path / "x")
    assert (
        not (tmp_path / "slipped.txt").exists() and not (tmp_path.parent / "slipped.txt").exists()
    )
    assert not (tmp_path / "x" / "ok.txt").exists()  # names are all checked before any write


# --- entity reads and paging -----------------------------------------------------------------


MALFORMED: dict[str, Handler] = {
    "html-200": lambda c: c.send("200 OK", b"<html>hi</html>", {"Content-Type": "text/html"}),
    "empty-200": lambda c: c.send("200 OK"),
    "not-json": lambda c: c.send("200 OK", b"{not json"),
    "array": lambda c: c.json([1, 2, 3]),
    "wrong-shape": lambda c: c.json({"Suites": {"Id": "x"}}),
    "null-item": lambda c: c.json({"Suites": [None]}),
    "bad-uuid": lambda c: c.json({"Suites": [{"Id": "not-a-uuid", "Name": "s"}]}),
    "redirect": lambda c: c.send("301 Moved Permanently", b"", {"Location": "http://x/"}),
    "retry-after-nan": lambda c: c.json({}, "503 Service Unavailable", **{"Retry-After": "nan"}),
    "server-error": lambda c: c.send("500 Internal Server Error", b"<html>oops</html>"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_every_malformed_answer_is_a_typed_error(
    hostile: HostileServer, session: ca.Session, case: str, tmp_path: Path
) -> None:
    for route in ("/api/", f"/asset/Simulations/{SIM}/Output"):
        hostile.routes[route] = MALFORMED[case]
    calls = [lambda: session.suites.get(SIM)]
    if case in ("null-item", "bad-uuid"):  # one unreadable row: reported, not fatal to a page
        with anyio.fail_after(BOUND_S):
            assert await session.suites.list() == []
            assert await session.suites.count() == 1
        assert list(session.suites.unreadable_rows)[-1] in (None, {"Id": "not-a-uuid", "Name": "s"})
    else:
        calls += [lambda: session.suites.list(), lambda: session.suites.count()]
    if case not in ("wrong-shape", "null-item", "bad-uuid"):  # answers no route should give
        calls += [
            lambda: session.outputs.info(SIM),
            lambda: session.outputs.tail(SIM, "stdout.txt"),
            lambda: session.outputs.read_range(SIM, "stdout.txt", 0, 9),
            lambda: session.experiments.stats(SIM),
            lambda: session.environments(),
            lambda: session.simulations.get_many([SIM, uuid4()]),
            lambda: session.asset_collections.download(SIM, tmp_path / "ac"),
            lambda: session.wait(experiment_id=SIM, timeout=BOUND_S),
        ]
    for call in calls:
        with anyio.fail_after(BOUND_S), pytest.raises(ca.CompsError):
            await call()


async def test_a_create_answered_with_garbage_everywhere_ends_unknown(
    hostile: HostileServer, session: ca.Session
) -> None:
    hostile.routes["/api/Suites"] = MALFORMED["html-200"]
    suite = ca.Suite(name="s")
    with anyio.fail_after(BOUND_S * 3), pytest.raises(ca.OutcomeUnknownError) as caught:
        await session.suites.create(suite)
    assert caught.value.key == suite.idempotency_key is not None


@pytest.mark.parametrize("mode", ["offset-ignored", "runaway-total"])
async def test_paging_that_never_ends_is_detected(
    hostile: HostileServer, session: ca.Session, mode: str
) -> None:
    requests = 0

    def page(c: Conn) -> None:
        nonlocal requests
        requests += 1
        count = int(httpx.URL(c.path).params.get("count", "2"))
        ids = (
            [str(SIM)] * count if mode == "offset-ignored" else [str(uuid4()) for _ in range(count)]
        )
        rows = [{"Id": i, "Name": "s"} for i in ids]
        c.json({"Suites": rows}, **{"Content-Range": f"items 0-{count - 1}/{10 * requests + 10}"})

    hostile.routes["/api/Suites"] = page
    with anyio.fail_after(BOUND_S), pytest.raises(ca.MalformedResponseError):
        await session.suites.list(page_size=2)
    assert requests < 50


# --- deadlines, retries and writes -----------------------------------------------------------


async def test_a_retry_after_storm_ends_at_the_call_deadline(
    hostile: HostileServer, tmp_path: Path
) -> None:
    hostile.routes["/api/Suites"] = lambda c: c.json(
        {}, "503 Service Unavailable", **{"Retry-After": "60"}
    )
    async with ca.Session(
        hostile.url, token=make_token(), token_cache_dir=tmp_path, retry=ca.RetryPolicy()
    ) as s:
        started = time.monotonic()
        with anyio.fail_after(BOUND_S), pytest.raises(ca.ServerError):
            await s.request("GET", "Suites", timeout=1.0)
        assert time.monotonic() - started < 2.0  # not 4 x 60 s


@pytest.mark.parametrize("body", ["past-the-socket-buffers", "a-batch"])
async def test_a_server_that_stops_reading_fails_the_call_in_time(
    hostile: HostileServer, tmp_path: Path, body: str
) -> None:
    """A body far bigger than the socket buffers is paced by the write timeout; one small enough
    to be written without waiting (a save's batch) ends by the read timeout."""
    hostile.read_bodies = False
    hostile.routes["/api/upload"] = black_hole
    hostile.routes["/api/Simulations"] = black_hole
    async with ca.Session(
        hostile.url,
        token=make_token(),
        token_cache_dir=tmp_path,
        timeout=httpx.Timeout(1.0),
        retry=ca.RetryPolicy(max_attempts=1),
    ) as s:
        started = time.monotonic()
        with anyio.fail_after(BOUND_S), pytest.raises(ca.TransferError):
            if body == "a-batch":
                await s.request("POST", "Simulations", files=[("x", ("x.json", b"{}" * 4000))])
            else:
                await s.request(
                    "POST",
                    f"upload/{SIM}",
                    content=b"\0" * (64 << 20),
                    headers={"Content-Range": f"bytes 0-{(64 << 20) - 1}/{64 << 20}"},
                )
        assert time.monotonic() - started < 5.0


async def test_no_secret_in_any_log(
    hostile: HostileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = make_token(tag="s3cr3t-signature")
    hostile.routes["/api/tokens"] = lambda c: c.json({}, **{"X-COMPS-Token": token})
    hostile.routes["/api/Suites"] = lambda c: c.json({"Suites": []})
    caplog.set_level(1)  # everything, from every library
    async with ca.Session(
        hostile.url, username="jdoe", password="hunter2-password", token_cache_dir=tmp_path
    ) as s:
        await s.suites.list()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/api/tokens" in text  # the login was logged, at several levels
    assert "s3cr3t-signature" not in text and "hunter2-password" not in text


# --- what real COMPS may do differently (inferred in the protocol notes) -----------------------


async def test_listed_md5_in_any_form(
    hostile: HostileServer, session: ca.Session, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    digest = hashlib.md5(GOOD).digest()
    forms = {
        "hex.txt": digest.hex(),
        "uuid.txt": str(UUID(bytes=digest)),
        "base64.txt": base64.b64encode(digest).decode(),
        "unreadable.txt": "md5:???",
    }
    hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c: c.json(
        listing(*({**output(n, "ok", 10), "MD5": m} for n, m in forms.items()))
    )
    hostile.routes["/asset/download/ok"] = lambda c: c.send("200 OK", GOOD)
    with anyio.fail_after(BOUND_S):
        paths = await session.outputs.download(SIM, None, tmp_path / "d")
    assert sorted(p.name for p in paths) == sorted(forms)
    assert [r for r in caplog.records if "cannot read" in r.getMessage()] != []
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c: c.json(
        listing({**output("b.txt", "ok", 10), "MD5": bad})
    )
    with anyio.fail_after(BOUND_S), pytest.raises(ca.ChecksumMismatchError):
        await session.outputs.download(SIM, None, tmp_path / "e")  # base64 is really checked


async def test_a_big_file_from_a_server_that_ignores_range(
    hostile: HostileServer, tmp_path: Path
) -> None:
    body = bytes(range(256)) * 40  # 10 KiB, "big" under the settings below
    hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c: c.json(
        listing(output("big.bin", "big", len(body), body))
    )
    hostile.routes["/asset/download/big"] = lambda c: c.send("200 OK", body)  # Range ignored
    settings = ca.DownloadSettings(parallel_threshold_bytes=4096, range_bytes=1024)
    async with ca.Session(
        hostile.url, token=make_token(), token_cache_dir=tmp_path, download=settings
    ) as s:
        with anyio.fail_after(BOUND_S):
            (path,) = await s.outputs.download(SIM, None, tmp_path / "d")
    assert path.read_bytes() == body


async def test_lists_without_content_range_are_paged_to_a_short_page(
    hostile: HostileServer, session: ca.Session
) -> None:
    rows = [{"Id": str(uuid4()), "Name": f"s{i}"} for i in range(5)]

    def page(c: Conn) -> None:
        params = httpx.URL(c.path).params
        start, count = int(params.get("offset", 0)), int(params.get("count", 100))
        c.json({"Suites": rows[start : start + count]})  # never a Content-Range

    hostile.routes["/api/Suites"] = page
    with anyio.fail_after(BOUND_S):
        got = await session.suites.list(page_size=2)
    assert [str(s.id) for s in got] == [r["Id"] for r in rows]


async def test_a_server_that_refuses_ids_lists_is_asked_one_by_one(
    hostile: HostileServer, session: ca.Session
) -> None:
    ids = [uuid4() for _ in range(3)]

    def answer(c: Conn) -> None:
        url = httpx.URL(c.path)
        if "Ids" in url.params:
            c.json({"ResponseMessage": "unknown parameter Ids"}, "400 Bad Request")
            return
        c.json({"Simulations": [{"Id": url.path.rsplit("/", 1)[-1], "Name": "s"}]})

    hostile.routes["/api/Simulations"] = answer
    with anyio.fail_after(BOUND_S):
        got = await session.simulations.get_many(ids)
    assert [s.id for s in got] == ids


async def test_stats_in_either_form_and_never_read_as_nothing_to_wait_for(
    hostile: HostileServer, session: ca.Session
) -> None:
    asked: list[str] = []
    stats = {str(SIM): {"SimulationStateCount": {"Running": 2, "Succeeded": 1}}}

    def experiments(c: Conn) -> None:
        asked.append(c.path.split("?")[0])
        if c.path.startswith(f"/api/Experiments/{SIM}/Stats"):
            c.json({"ResponseMessage": "no such route"}, "404 Not Found")
        elif "statsoperations" in c.path:
            c.json({"Stats": stats})  # the newer form
        else:
            c.json({"Experiments": [{"Id": str(SIM), "Name": "e"}]})

    hostile.routes["/api/Experiments"] = experiments
    with anyio.fail_after(BOUND_S):
        assert await session.experiments.stats(SIM) == {"Running": 2, "Succeeded": 1}
        assert await session.experiments.stats(SIM) == {"Running": 2, "Succeeded": 1}
    assert asked == [f"/api/Experiments/{SIM}/Stats", "/api/Experiments", "/api/Experiments"]
    # A 200 without Stats for the id is "unavailable": wait counts by listing, it does not
    # return at once as if there were nothing to wait for.
    stats.clear()
    listed = 0

    def simulations(c: Conn) -> None:
        nonlocal listed
        listed += 1
        state = "Running" if listed == 1 else "Succeeded"
        c.json({"Simulations": [{"Id": str(uuid4()), "SimulationState": state}]})

    hostile.routes["/api/Simulations"] = simulations
    with pytest.raises(ca.MalformedResponseError):
        await session.experiments.stats(SIM)
    fast = ca.WaitSettings(initial_interval_s=0.01, max_interval_s=0.02)
    session.wait_settings = fast
    with anyio.fail_after(BOUND_S):
        final = await session.wait(experiment_id=SIM)
    assert final.succeeded == 1 and listed == 2


async def test_headers_as_pycomps_sends_them_on_the_wire(
    hostile: HostileServer, tmp_path: Path
) -> None:
    """Captured at the socket, on both transports: JSON content type and Accept on body-less
    PUTs and on the login, as pyCOMPS sends them (§3.1)."""
    seen: dict[str, dict[str, str]] = {}

    def record(c: Conn) -> None:
        seen[f"{c.method} {c.path.split('?')[0]}"] = c.headers
        c.json({}, **{"X-COMPS-Token": make_token()} if "tokens" in c.path else {})

    hostile.routes["/api/"] = record
    async with ca.Session(
        hostile.url, username="jdoe", password="pw", token_cache_dir=tmp_path
    ) as s:
        await s.simulations.commission(SIM)
    for call in ("POST /api/tokens", f"PUT /api/Simulations/{SIM}/State/CommissionRequested"):
        assert seen[call].get("content-type") == "application/json", (call, seen[call])
        assert seen[call].get("accept") == "application/json", (call, seen[call])


async def test_download_urls_are_sent_byte_for_byte(
    hostile: HostileServer, session: ca.Session, tmp_path: Path
) -> None:
    """A signed URL must reach the server as listed: no %2F -> / or %3D -> = re-encoding."""
    target = "/asset/download/x%2Fy/f%20g.txt?sig=a%2Fb%3D%3D&se=2026-12-01T00%3A00Z"
    requested: list[str] = []

    def record(c: Conn) -> None:
        requested.append(c.path)
        c.send("200 OK", GOOD)

    hostile.routes[f"/asset/Simulations/{SIM}/Output"] = lambda c: c.json(
        listing({**output("f.txt", "", 10), "Url": target})
    )
    hostile.routes["/asset/download/"] = record
    with anyio.fail_after(BOUND_S):
        await session.outputs.download(SIM, None, tmp_path / "d")
    assert requested == [target]
