"""The transfer engines on their own: each receives a request layer and explicit collaborators
(never a Session), so it can be driven by a fake requester that plays the server."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
import pytest

import comps_async as ca
from comps_async._concurrency import AdaptiveLimit
from comps_async._failures import Attempts, Failure, classify
from comps_async._transfer.upload import Uploader

pytestmark = pytest.mark.anyio

MD5 = UUID("0b6d1b9e-3c3f-4c44-9d3a-2f4a5c6d7e8f")


class FakeRequester:
    """Answers /upload/check with ``held`` bytes (None: unknown content) and keeps the chunks."""

    def __init__(self, held: int | None) -> None:
        self.held = held
        self.chunks: list[tuple[str, bytes]] = []

    async def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        if path.startswith("upload/check/"):
            if self.held is None:
                raise ca.NotFoundError(404, "no such content")
            return httpx.Response(206, json={"Size": self.held})
        assert method == "POST" and path == f"upload/{MD5}" and options["idempotent"]
        body = b"".join([piece async for piece in options["content"]])
        self.chunks.append((options["headers"]["Content-Range"], body))
        return httpx.Response(200, json={})


@pytest.mark.parametrize(
    ("held", "spans"),
    [
        (None, ["bytes 0-3/10", "bytes 4-7/10", "bytes 8-9/10"]),
        (4, ["bytes 4-7/10", "bytes 8-9/10"]),  # an interrupted upload resumes
    ],
)
async def test_the_uploader_sends_what_the_server_lacks_in_chunks(
    held: int | None, spans: list[str]
) -> None:
    data = b"0123456789"
    fake = FakeRequester(held)
    settings = ca.UploadSettings(chunk_bytes=4, stream_block_bytes=2)
    uploader = Uploader(fake, settings)  # type: ignore[arg-type]
    progress: list[int] = []
    source = ca.models.ContentSource(data=data)
    sent = await uploader.upload(source, MD5, len(data), progress.append)
    assert [span for span, _ in fake.chunks] == spans
    assert b"".join(body for _, body in fake.chunks) == data[held or 0 :]
    assert sent == len(data) - (held or 0) == sum(progress) - (held or 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(limit: AdaptiveLimit, clock: FakeClock, rate_per_stream: float, cap: float) -> None:
    """One window of traffic: each stream in flight moves ``rate_per_stream`` up to ``cap``."""
    clock.now += limit.window_s
    limit.moved(int(min(cap, limit.limit * rate_per_stream) * limit.window_s))


def test_the_adaptive_limit_fills_a_capped_link_and_keeps_few_on_a_fast_one() -> None:
    clock = FakeClock()
    # Each connection carries 20 MB/s, the link 200 MB/s: about 10 streams fill it.
    capped = AdaptiveLimit(2, 32, clock=clock)
    capped.moved(0)  # the first bytes start the clock
    for _ in range(12):
        feed(capped, clock, 20e6, 200e6)
    assert 8 <= capped.limit <= 32  # grew past the 10 the link needs, then stayed
    settled = capped.limit
    for _ in range(5):
        feed(capped, clock, 20e6, 200e6)
    assert capped.limit == settled  # flat throughput: the limit holds

    # A link where one stream already gets everything: more streams add nothing.
    other = FakeClock()
    fast = AdaptiveLimit(2, 32, clock=other)
    fast.moved(0)
    for _ in range(12):
        feed(fast, other, 300e6, 300e6)
    assert fast.limit <= 4

    # The link slows down by half: the limit comes down, never below the minimum.
    for _ in range(20):
        clock.now += capped.window_s
        capped.moved(int(5e6 * capped.window_s))
    assert capped.minimum <= capped.limit < settled


def test_the_adaptive_limit_backs_off_when_the_server_says_so() -> None:
    clock = FakeClock()
    limit = AdaptiveLimit(4, 16, clock=clock)
    limit.moved(0)
    feed(limit, clock, 100.0, 10_000.0)  # the first window: room to grow
    assert limit.limit == 8
    limit.back_off()  # a 429 or 503
    assert limit.limit == 6
    feed(limit, clock, 100.0, 10_000.0)  # a window restarts after a back-off: no change yet
    assert limit.limit == 6
    for _ in range(10):
        limit.back_off()
    assert limit.limit == limit.minimum == 1


def test_the_adaptive_limit_refuses_impossible_bounds() -> None:
    with pytest.raises(ValueError, match="minimum"):
        AdaptiveLimit(8, 4)


async def test_httpx_transport_takes_the_proxy_the_environment_names(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under trio the SDK uses httpx's own transport, which reads no environment: the proxy
    that applies to the host is handed to it (aiohttp, under asyncio, reads it itself)."""
    if anyio_backend != "trio":
        pytest.skip("under asyncio aiohttp reads the proxy environment itself")
    import httpcore

    from comps_async._transports import default_transport, environment_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert environment_proxy("https://comps.idmod.org") == "http://proxy.example:3128"
    assert environment_proxy("http://127.0.0.1:8100") is None  # NO_PROXY
    limits = httpx.Limits()
    proxied = default_transport(True, limits, "https://comps.idmod.org")
    direct = default_transport(True, limits, "http://127.0.0.1:8100")
    assert isinstance(proxied, httpx.AsyncHTTPTransport)
    assert isinstance(proxied._pool, httpcore.AsyncHTTPProxy)
    assert not isinstance(direct._pool, httpcore.AsyncHTTPProxy)  # type: ignore[attr-defined]


def _transfer_error_caused_by(cause: Exception) -> ca.TransferError:
    try:
        raise ca.TransferError("lost") from cause
    except ca.TransferError as error:
        return error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("refused"), Failure.NEVER_SENT),
        (httpx.ConnectTimeout("slow"), Failure.NEVER_SENT),
        (ca.RateLimitedError(429, "slow down"), Failure.NEVER_SENT),
        (_transfer_error_caused_by(httpx.ConnectError("refused")), Failure.NEVER_SENT),
        (httpx.ReadError("reset"), Failure.MAYBE),
        (httpx.ReadTimeout("slow"), Failure.MAYBE),
        (_transfer_error_caused_by(httpx.RemoteProtocolError("cut")), Failure.MAYBE),
        (ca.ServerError(503, "busy"), Failure.MAYBE),
        (ca.ApiError(408, "timeout"), Failure.MAYBE),
        (ca.MalformedResponseError("an HTML 200"), Failure.MAYBE),
        (ca.NotFoundError(404, "gone"), Failure.DEFINITE),
        (ca.ApiError(400, "bad"), Failure.DEFINITE),
        (ca.ChecksumMismatchError("md5", expected="a", actual="b"), Failure.DEFINITE),
        (ValueError("caller's mistake"), Failure.DEFINITE),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_one_classifier_decides_every_retry(error: BaseException, kind: Failure) -> None:
    """The policy, the create loop and the download engine all ask ``classify``."""
    assert classify(error) is kind


async def test_attempts_wait_by_the_policy_and_stop() -> None:
    """The one attempt loop: at most ``most`` attempts, the policy's backoff between them (the
    server's Retry-After first), no wait after a repaired failure, none past the deadline."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    retry = ca.RetryPolicy(sleep=sleep, backoff_base_s=1.0, backoff_max_s=1.0)
    attempts = Attempts(retry, 4)
    seen = []
    async for attempt in attempts:
        seen.append(attempt)
        if attempt == 1:
            attempts.failed(ca.ServerError(503, "busy", retry_after_s=7.0))
        elif attempt == 2:
            attempts.failed(ca.ApiError(400, "repaired"))
            attempts.again_now()
        else:
            attempts.failed(httpx.ReadError("reset"))
    assert seen == [1, 2, 3, 4] and waits[0] == 7.0 and len(waits) == 2 and waits[1] <= 1.0
    past = Attempts(retry, 4, deadline=0.0)  # (a monotonic instant long gone)
    assert [a async for a in past] == [1]  # the first attempt runs; no wait may end past it
