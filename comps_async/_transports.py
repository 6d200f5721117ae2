"""The default transport, chosen from benchmarks/RESULTS.md: under asyncio, httpx_aiohttp's
transport is 2-3x faster than httpx's own at 16-64 concurrent requests (encode/httpx #3215);
under trio (aiohttp is asyncio-only) httpx's own transport is used.

httpx_aiohttp maps *every* aiohttp connection error, including "server disconnected" after the
request was sent, to ``httpx.ConnectTimeout``. Our retry policy treats connect errors as "never
reached the server" and repeats even a POST, so that mapping would risk duplicate saves. This
module re-maps from the original aiohttp exception, in one place.
"""

from __future__ import annotations

import math
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import sniffio

from .pipeline import OPTION_STREAM

__all__ = ["default_transport"]

STREAM_CHUNK_BYTES = 256 * 1024


def default_transport(
    verify: bool | str, limits: httpx.Limits, host: str | None = None
) -> httpx.AsyncBaseTransport:
    """The fastest safe transport for the running event loop. Both honour the environment's
    proxies (``HTTPS_PROXY``, ``NO_PROXY``...) for ``host``, as httpx's client did: aiohttp
    reads them itself, httpx's transport is given the one that applies."""
    if sniffio.current_async_library() == "asyncio":
        try:
            return _make_aiohttp_transport(verify, limits)
        except ImportError:  # the optional speed-up is not installed
            pass
    return httpx.AsyncHTTPTransport(verify=verify, limits=limits, proxy=environment_proxy(host))


def environment_proxy(host: str | None) -> str | None:
    """The proxy the environment names for ``host`` (``scheme://name[:port]``), or None."""
    if host is None:
        return None
    url = urllib.parse.urlsplit(host)
    if url.hostname is None or urllib.request.proxy_bypass(url.hostname):
        return None
    return urllib.request.getproxies().get(url.scheme)


def _make_aiohttp_transport(verify: bool | str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    import aiohttp
    import yarl
    from httpx_aiohttp import AiohttpTransport
    from httpx_aiohttp.transport import AiohttpResponseStream

    class SafeStream(AiohttpResponseStream):
        """A body whose every failure is an httpx error (a Content-Length that does not match
        the body raises aiohttp's own exceptions, which httpx_aiohttp leaves unmapped)."""

        # Hand on whatever has arrived, up to a download block (httpx_aiohttp's 16 KiB cut
        # a paced 2 MB body into ~130 pieces, each paying the iterator chain: the event loop,
        # not the link, was what limited a harvest at WAN).
        CHUNK_SIZE = 256 << 10

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in super().__aiter__():
                    yield chunk
            except httpx.HTTPError:
                raise
            except (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError) as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc

    class SafeAiohttpTransport(AiohttpTransport):
        """AiohttpTransport with errors mapped by whether the request could have been sent,
        and httpx's write timeout enforced (aiohttp has none: a server that stops reading a
        request body would hang the call for ever)."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            write_s = (request.extensions.get("timeout") or {}).get("write")
            if write_s is not None and _fits_write_buffer(request):
                # Written whole without waiting (_UNPACED_BYTES), so it cannot stall: no
                # pacing, and sent as one bytes object (a save's batch, typically). A server
                # that stops reading then fails the call by the read timeout. (Asked first:
                # a multipart body not read yet answers ``_has_body`` by an exception.)
                await request.aread()
                return await self._send(request)
            if write_s is None or not _has_body(request):
                return await self._send(request)
            with anyio.CancelScope() as scope:
                scope.deadline = anyio.current_time() + write_s
                request.stream = _Paced(request.stream, scope, write_s)
                # httpx_aiohttp sends a read body as one bytes object, out of our sight:
                # forget the copy so that it takes the paced stream (same bytes, same length).
                vars(request).pop("_content", None)
                response = await self._send(request)
            if scope.cancelled_caught:
                raise httpx.WriteTimeout(
                    f"no progress sending the request for {write_s} s", request=request
                )
            return response

        def get_client(self) -> aiohttp.ClientSession:
            session: aiohttp.ClientSession = super().get_client()
            plain = session.request

            def as_given(method: str, url: Any, **kwargs: Any) -> Any:
                # aiohttp re-quotes a str URL (%2F -> / in the query), which breaks signed
                # download URLs: send the URL httpx built, byte for byte.
                if isinstance(url, str):
                    url = yarl.URL(url, encoded=True)
                return plain(method, url, **kwargs)

            session.request = as_given  # type: ignore[method-assign]
            return session

        async def _send(self, request: httpx.Request) -> httpx.Response:
            try:
                response: httpx.Response = await super().handle_async_request(request)
            except httpx.TransportError as exc:
                cause = exc.__cause__
                if isinstance(cause, aiohttp.ClientConnectorError):
                    raise httpx.ConnectError(str(cause), request=request) from cause
                if isinstance(cause, aiohttp.ConnectionTimeoutError):
                    raise httpx.ConnectTimeout(str(cause), request=request) from cause
                if isinstance(cause, aiohttp.SocketTimeoutError):
                    raise httpx.ReadTimeout(str(cause), request=request) from cause
                if isinstance(cause, aiohttp.ClientError | OSError):
                    # Sent, then the connection broke: the server may have processed it.
                    raise httpx.RemoteProtocolError(str(cause), request=request) from cause
                raise
            except (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError) as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            if isinstance(response.stream, AiohttpResponseStream):
                if not request.extensions.get(OPTION_STREAM):
                    # Read now, in one piece: an answer that will be read whole anyway costs
                    # less client CPU than through httpx's async chunk iterators.
                    await _read_whole(response, response.stream._aiohttp_response)
                    return response
                stream = SafeStream(response.stream._aiohttp_response)
                # 16 KiB pieces cost a Python iteration each; big downloads go faster in larger
                # ones (aiohttp hands over what it has, up to this size).
                stream.CHUNK_SIZE = STREAM_CHUNK_BYTES
                response.stream = stream
            return response

    return SafeAiohttpTransport(verify=verify, limits=limits)


async def _read_whole(response: httpx.Response, raw: Any) -> None:
    """Give ``response`` its whole body from aiohttp's ``raw`` answer (decoded by httpx)."""
    import aiohttp

    try:
        body = await raw.read()
    except (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError) as exc:
        raise httpx.RemoteProtocolError(str(exc), request=response.request) from exc
    finally:
        raw.release()
    response.stream = httpx.ByteStream(body)
    response.read()


# aiohttp's StreamWriter waits for the socket to drain only past 64 KiB written (headers
# included); a body this much smaller is written without ever waiting.
_UNPACED_BYTES = 48 * 1024


def _fits_write_buffer(request: httpx.Request) -> bool:
    length = request.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= _UNPACED_BYTES


def _has_body(request: httpx.Request) -> bool:
    try:
        return bool(request.content)
    except httpx.RequestNotRead:
        return True  # a streamed body


class _Paced(httpx.AsyncByteStream):
    """A request body that pushes its scope's deadline ``write_s`` ahead each time the
    transport takes another piece (aiohttp takes the next piece once the previous one is
    written), so a server that stops reading fails the call after ``write_s``. Bytes bodies are
    handed over in pieces so that the same holds for them. Once the body is sent, the deadline
    is lifted: waiting for the answer is the read timeout's business."""

    _PIECE = 256 * 1024

    def __init__(self, inner: object, scope: anyio.CancelScope, write_s: float) -> None:
        self._inner = inner
        self._scope = scope
        self._write_s = write_s

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in _pieces(self._inner, self._PIECE):
            self._scope.deadline = anyio.current_time() + self._write_s
            yield chunk
        # aiohttp asks for more only after writing the last piece: the body is out.
        self._scope.deadline = math.inf


async def _pieces(inner: object, size: int) -> AsyncIterator[bytes]:
    """``inner``'s bytes in pieces of about ``size``: big chunks cut, small ones joined. Each
    piece is one socket write; a multipart body is many small chunks (part headers, separators),
    and on loopback every write also wakes the server (~9 writes a batch, most of a save's
    system time, before small chunks were joined)."""
    if isinstance(inner, httpx.ByteStream):
        data = b"".join(list(inner))
        for start in range(0, len(data), size):
            yield data[start : start + size]
        return
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in inner:  # type: ignore[attr-defined]
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= size:
            yield b"".join(pending)
            pending, pending_size = [], 0
    if pending:
        yield b"".join(pending)
