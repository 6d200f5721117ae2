"""Fault and load injection for the local server (off by default), plus per-route counters,
and the emulation of a wide-area link: latency per request and bandwidth caps in both
directions, per connection and shared (``FaultConfig.wan()``).

A pure ASGI middleware. A "reset" drops the connection: the response starts with a declared
Content-Length and then the app raises, so uvicorn closes the socket mid-response and the client
sees a broken connection, exactly as when a proxy resets it. ``reset_after_rate`` lets the
request commit first, which is what makes a retried POST dangerous; ``garble_rate`` lets it
commit and answers 200 with a body that is not the app's (a proxy's error page).
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["FaultConfig", "FaultInjector", "FaultyApp", "route_key"]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class _InjectedReset(Exception):
    """Raised after the response started, so that the server drops the connection."""


@dataclass(frozen=True)
class FaultConfig:
    """What to inject, per request, on requests whose ``METHOD path`` matches ``routes``."""

    latency_s: float = 0.0
    # Download direction of each connection (one response at a time on an HTTP/1.1 connection,
    # so pacing each response paces its connection).
    bandwidth_bytes_per_s: float | None = None
    upload_bandwidth_bytes_per_s: float | None = None  # upload direction of each connection
    # Shared by all connections, each direction on its own (a site's uplink and downlink).
    total_bandwidth_bytes_per_s: float | None = None
    error_503_rate: float = 0.0
    retry_after_s: float = 0.05
    error_429_rate: float = 0.0
    reset_before_rate: float = 0.0
    reset_after_rate: float = 0.0
    garble_rate: float = 0.0
    truncate_rate: float = 0.0
    routes: str = ".*"
    seed: int | None = None

    @classmethod
    def wan(
        cls,
        *,
        latency_s: float = 0.08,
        per_connection_bytes_per_s: float = 20e6,
        total_bytes_per_s: float | None = 200e6,
    ) -> FaultConfig:
        """A COMPS far away: 80 ms per request, 20 MB/s per connection each way (TCP windows,
        proxies), 200 MB/s for the whole link — where our users really are."""
        return cls(
            latency_s=latency_s,
            bandwidth_bytes_per_s=per_connection_bytes_per_s,
            upload_bandwidth_bytes_per_s=per_connection_bytes_per_s,
            total_bandwidth_bytes_per_s=total_bytes_per_s,
        )


def route_key(method: str, path: str) -> str:
    """``POST /api/Simulations``, ``GET /api/Simulations/{id}``: ids folded for counting."""
    return f"{method} {_UUID.sub('{id}', path)}"


@dataclass
class FaultInjector:
    """The fault knobs and per-route counters; ``config`` may be replaced at any time (tests
    switch faults on and off). ``FaultyApp`` applies them to an ASGI app."""

    config: FaultConfig = field(default_factory=FaultConfig)
    counters: Counter[str] = field(default_factory=Counter)
    # Response body bytes per route (what a client downloads: waiting's cost is measured by it).
    bytes_sent: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(default_factory=random.Random)
    # The link's shared capacity, one clock per direction (used inside the server's loop).
    downlink: _Clock = field(default_factory=lambda: _Clock(None))
    uplink: _Clock = field(default_factory=lambda: _Clock(None))

    def __post_init__(self) -> None:
        self._apply()

    def configure(self, config: FaultConfig | None = None, **changes: Any) -> None:
        """Replace the fault settings (keyword changes apply on top of the current ones)."""
        self.config = replace(config or self.config, **changes)
        self._apply()

    def _apply(self) -> None:
        if self.config.seed is not None:
            self._random.seed(self.config.seed)
        self.downlink.rate = self.uplink.rate = self.config.total_bandwidth_bytes_per_s

    def count(self, key: str) -> None:
        """Count one request of a route."""
        with self._lock:
            self.counters[key] += 1

    def roll(self, rate: float, name: str) -> bool:
        """Whether to inject fault ``name`` now (counted when it is)."""
        if rate > 0 and self._random.random() < rate:
            self.injected[name] += 1
            return True
        return False


@dataclass
class FaultyApp:
    """ASGI middleware: ``app`` with the faults of ``faults`` injected."""

    app: ASGIApp
    faults: FaultInjector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = route_key(scope["method"], scope["path"])
        self.faults.count(key)
        send = _Counted(send, key, self.faults.bytes_sent)
        cfg = self.faults.config
        # The control routes (/api/_local/...) are never faulted: a test must be able to
        # switch faults off through them.
        if not re.search(cfg.routes, key) or scope["path"].startswith("/api/_local/"):
            await self.app(scope, receive, send)
            return
        if cfg.latency_s:
            await anyio.sleep(cfg.latency_s)
        if self.faults.roll(cfg.error_503_rate, "503"):
            await _error(send, 503, {"retry-after": f"{cfg.retry_after_s:g}"})
            return
        if self.faults.roll(cfg.error_429_rate, "429"):
            await _error(send, 429, {"retry-after": f"{cfg.retry_after_s:g}"})
            return
        if self.faults.roll(cfg.reset_before_rate, "reset_before"):
            await _drop(send)
        if self.faults.roll(cfg.reset_after_rate, "reset_after"):
            await self.app(scope, receive, _swallow)  # commits, answer lost
            await _drop(send)
        if self.faults.roll(cfg.garble_rate, "garble"):
            await self.app(scope, receive, _swallow)  # commits, answer replaced
            await _garbled(send)
            return
        truncate = self.faults.roll(cfg.truncate_rate, "truncate")
        down = _Link(_Clock(cfg.bandwidth_bytes_per_s), self.faults.downlink)
        up = _Link(_Clock(cfg.upload_bandwidth_bytes_per_s), self.faults.uplink)
        await self.app(scope, _PacedReceive(receive, up), _Throttled(send, down, truncate))


@dataclass
class _Counted:
    """``send``, adding the body bytes of each answer to ``counter[key]``."""

    send: Send
    key: str
    counter: Counter[str]

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            self.counter[self.key] += len(message.get("body", b""))
        await self.send(message)


async def _error(send: Send, status: int, headers: dict[str, str]) -> None:
    body = (
        b'{"ResponseMessage": "injected fault: try again later", '
        b'"CorrelationId": "fault-injection"}'
    )
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]}
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise _InjectedReset("injected connection reset")


async def _garbled(send: Send) -> None:
    body = b"<html><body>502 Bad Gateway (but the request went through)</body></html>"
    headers = [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _swallow(message: Message) -> None:
    return None


class _Clock:
    """When one direction of a link (``rate`` bytes/s; None: unlimited) is free again: each
    piece of bytes reserves the time the link needs to carry it, after the pieces before it."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._free_at = 0.0

    def reserve(self, nbytes: int, now: float) -> float:
        """When ``nbytes`` sent now will have passed (``now`` if unlimited)."""
        if not self.rate:
            return now
        self._free_at = max(now, self._free_at) + nbytes / self.rate
        return self._free_at


class _Link:
    """One connection's direction under its own cap and the link's shared one."""

    def __init__(self, connection: _Clock, shared: _Clock) -> None:
        self._connection = connection
        self._shared = shared

    async def carry(self, nbytes: int) -> None:
        """Wait as long as the link needs to carry ``nbytes``."""
        if not nbytes or not (self._connection.rate or self._shared.rate):
            return
        now = anyio.current_time()
        done = max(self._connection.reserve(nbytes, now), self._shared.reserve(nbytes, now))
        await anyio.sleep(done - now)


class _PacedReceive:
    """A ``receive`` that hands request bodies to the app no faster than the link carries them
    (the server then reads the socket that slowly, and TCP slows the client down)."""

    def __init__(self, receive: Receive, link: _Link) -> None:
        self._receive = receive
        self._link = link

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            await self._link.carry(len(message.get("body", b"")))
        return message


class _Throttled:
    """A ``send`` that paces body bytes to the link and can cut the body short."""

    def __init__(self, send: Send, link: _Link, truncate: bool) -> None:
        self._send = send
        self._link = link
        self._truncate = truncate

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            body: bytes = message.get("body", b"")
            if self._truncate and body:
                await self._send({**message, "body": body[: len(body) // 2], "more_body": True})
                raise _InjectedReset("injected truncated body")
            await self._link.carry(len(body))
        await self._send(message)
