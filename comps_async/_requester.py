"""The request layer under ``Session``: builds requests for one host, sends them through the
pipeline of policies to the transport it owns, maps failures to the SDK's errors, and runs the
background work of transfers. Resources and transfer engines receive it (never the Session).

It talks to the transport directly rather than through ``httpx.AsyncClient.send``: the client's
per-request work (a second URL parse to merge params, a cookie-jar pass over every response,
auth and redirect machinery we do not use) cost more client CPU than everything else the SDK
does per call (benchmarks/RESULTS.md, "CPU per request"). What we keep of it is here: default
headers, the timeout extension, and cookies for the few hosts that set them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Unpack

import anyio
import anyio.to_thread
import httpx
from anyio.abc import TaskGroup

from ._capabilities import Capabilities, Facts, capabilities_path, save_capabilities
from ._concurrency import deadline
from ._hosts import Host
from .auth import TokenManager
from .errors import api_error, transfer_error
from .pipeline import (
    OPTION_DEADLINE,
    OPTION_IDEMPOTENT,
    OPTION_MAX_ATTEMPTS,
    OPTION_NO_AUTH,
    OPTION_STREAM,
    Pipeline,
    Policy,
    option,
)
from .policies.retry import RetryPolicy

__all__ = ["Requester"]

_NOT_OPEN = "use the Session inside 'async with Session(...) as s:'"

# What httpx.AsyncClient sent by default (User-Agent included), so the wire is unchanged.
_DEFAULT_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": f"python-httpx/{httpx.__version__}",
}
# Built once: httpx copies a Headers as it is, and checks and encodes every header of a dict
# (a third of building a request; a bulk save builds one per batch).
_HEADERS_WITH_BODY = httpx.Headers(_DEFAULT_HEADERS)
# pyCOMPS says JSON on every call without a body of its own, GETs included (§3.1, §9;
# tests/test_wire_parity.py); aiohttp would label a body-less PUT/POST application/octet-stream.
_HEADERS_WITHOUT_BODY = httpx.Headers({**_DEFAULT_HEADERS, "Content-Type": "application/json"})


class Requester:
    """Requests to one COMPS host, and what every caller of the host shares: the retry
    backoff, the tokens, what the host is known to answer, background work.

    ``start`` opens it with a transport and the pipeline's policies; ``aclose`` cancels the
    background work and closes the transport.
    """

    def __init__(
        self,
        host: Host,
        *,
        timeout: httpx.Timeout,
        retry: RetryPolicy,
        idempotency_tags: bool = True,
    ) -> None:
        self.host = host
        self.timeout = timeout
        self._timeouts = timeout.as_dict()
        # The backoff every retry loop of the SDK waits by (the pipeline's and the engines').
        self.retry = retry
        # Creates carry the reserved key tags (exactly once) unless this is False.
        self.idempotency_tags = idempotency_tags
        # What this host is known to answer where COMPS's behaviour is inferred (PROTOCOL.md).
        self.capabilities = Capabilities(host=host.base)
        self._tokens: TokenManager | None = None
        self._transport: httpx.AsyncBaseTransport | None = None
        self._pipeline: Pipeline | None = None
        self._cookies = httpx.Cookies()
        self._background: TaskGroup | None = None

    async def start(
        self,
        transport: httpx.AsyncBaseTransport,
        tokens: TokenManager,
        policies: Sequence[Policy],
    ) -> None:
        """Open: requests go through ``policies`` (outermost first) to ``transport``."""
        self._transport, self._tokens = transport, tokens
        self._pipeline = Pipeline(policies, self._to_transport)
        # Background work that must outlive one call but not the session (harvest producers):
        # its tasks never raise; failures travel to the caller through their own streams.
        self._background = anyio.create_task_group()
        await self._background.__aenter__()

    async def aclose(self) -> None:
        """Cancel the background work and close the transport (its connection pool)."""
        try:
            if self._background is not None:
                self._background.cancel_scope.cancel()
                await self._background.__aexit__(None, None, None)
                self._background = None
        finally:
            self._pipeline = None
            if self._transport is not None:
                await self._transport.aclose()
                self._transport = None

    @property
    def tokens(self) -> TokenManager:
        """The session's tokens (login, renewal, the user's name)."""
        if self._tokens is None:
            raise RuntimeError(_NOT_OPEN)
        return self._tokens

    @property
    def capabilities_file(self) -> Path:
        """Where ``doctor`` records what this host answered (beside the token cache)."""
        return capabilities_path(self.tokens.cache_dir, self.host.cache_key)

    async def learn(self, **facts: Unpack[Facts]) -> None:
        """Record what a call found this host to answer, for this session and (beside the token
        cache) for later ones; nothing is written when nothing changed."""
        changed = {k: v for k, v in facts.items() if getattr(self.capabilities, k) != v}
        if not changed:
            return
        for name, value in changed.items():
            setattr(self.capabilities, name, value)
        await anyio.to_thread.run_sync(save_capabilities, self.capabilities_file, self.capabilities)

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn`` in the background until the requester closes (it must not raise)."""
        if self._background is None:
            raise RuntimeError(_NOT_OPEN)
        self._background.start_soon(fn)

    def build(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_attempts: int | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Request:
        """A request for a protocol path (``Simulations/...`` or ``asset/...``) or an absolute
        server URL (re-rooted on this host), with per-call options: ``timeout`` (a number is a
        deadline for the whole call, retries included), ``max_attempts``, ``idempotent``."""
        url = self.host.reroot(path) if "://" in path else self.host.url(path)
        no_body = json is None and content is None and files is None
        merged = _HEADERS_WITHOUT_BODY if no_body else _HEADERS_WITH_BODY
        if headers:
            merged = httpx.Headers(merged)
            merged.update(headers)
        request = httpx.Request(
            method,
            httpx.URL(url, params=params) if params else _parsed(url),
            json=json,
            content=content,
            files=files,
            headers=merged,
            extensions={
                "timeout": self._timeouts if timeout is None else httpx.Timeout(timeout).as_dict()
            },
        )
        if self._cookies:  # hosts behind a sticky load balancer set one
            self._cookies.set_cookie_header(request)
        if isinstance(timeout, int | float):  # the whole call, retries included
            request.extensions[OPTION_DEADLINE] = time.monotonic() + timeout
        if max_attempts is not None:
            request.extensions[OPTION_MAX_ATTEMPTS] = max_attempts
        if idempotent is not None:
            request.extensions[OPTION_IDEMPOTENT] = idempotent
        return request

    async def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """Build and send a request (see ``build``); the answer's body is read."""
        return await self.send(self.build(method, path, **options))

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send a built request through the pipeline. A 3xx/4xx/5xx answer raises the typed
        ``ApiError`` (redirects are not followed: the token header would follow them to any
        host); a connection that failed for good raises ``TransferError``."""
        response = await self._send(request)
        _release_body(request)
        if response.status_code >= 300:
            await response.aread()
            raise api_error(response)
        return response

    async def send_unauthenticated(self, request: httpx.Request) -> httpx.Response:
        """Send without a token and without error mapping (the ``/tokens`` calls)."""
        request.extensions[OPTION_NO_AUTH] = True
        return await self._send(request)

    @asynccontextmanager
    async def stream(self, method: str, path: str, **options: Any) -> AsyncIterator[httpx.Response]:
        """Like ``request`` but the body is left unread for ``aiter_bytes``; closed on exit."""
        request = self.build(method, path, **options)
        request.extensions[OPTION_STREAM] = True
        response = await self.send(request)
        try:
            yield response
        except httpx.TransportError as exc:  # reading the body: the same boundary as sending
            raise transfer_error(request, exc) from exc
        finally:
            await response.aclose()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        pipeline = self._pipeline
        if pipeline is None:
            raise RuntimeError(_NOT_OPEN)
        end = option(request, OPTION_DEADLINE)
        try:
            if end is None:
                return await pipeline.send(request)
            with deadline(end - time.monotonic(), request.method):
                return await pipeline.send(request)
        except httpx.TransportError as exc:
            raise transfer_error(request, exc) from exc

    async def _to_transport(self, request: httpx.Request) -> httpx.Response:
        assert self._transport is not None  # the pipeline exists only while it does
        response = await self._transport.handle_async_request(request)
        response.request = request
        try:
            if "set-cookie" in response.headers:
                self._cookies.extract_cookies(response)
            if not option(request, OPTION_STREAM):
                await response.aread()  # inside the pipeline, so a cut body is retried
        except BaseException:
            await response.aclose()
            raise
        return response


@functools.lru_cache(maxsize=256)
def _parsed(url: str) -> httpx.URL:
    """``url`` parsed once: a session posts to a handful of URLs, thousands of times, and
    httpx parses a str on every request (a third of building one). URLs are immutable."""
    return httpx.URL(url)


def _release_body(request: httpx.Request) -> None:
    """Drop a sent request's body. Once the pipeline has returned it is never sent again, and
    reference cycles inside tenacity and aiohttp would otherwise keep every uploaded body alive
    until the next full garbage collection (hundreds of MB during a bulk upload)."""
    request.stream = httpx.ByteStream(b"")
    if "_content" in vars(request):
        request._content = b""
