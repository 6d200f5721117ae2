"""The default transport, chosen from benchmarks/RESULTS.md: under asyncio, httpx_aiohttp's
transport is 2-3x faster than httpx's own at 16-64 concurrent requests (encode/httpx #3215);
under trio (aiohttp is asyncio-only) httpx's own transport is used.

httpx_aiohttp maps *every* aiohttp connection error, including "server disconnected" after the
request was sent, to ``httpx.ConnectTimeout``. Our retry policy treats connect errors as "never
reached the server" and repeats even a POST, so that mapping would risk duplicate saves. This
module re-maps from the original aiohttp exception, in one place.
"""

from __future__ import annotations

import httpx
import sniffio

__all__ = ["default_transport"]

STREAM_CHUNK_BYTES = 256 * 1024


def default_transport(verify: bool | str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The fastest safe transport for the running event loop."""
    if sniffio.current_async_library() == "asyncio":
        try:
            return _make_aiohttp_transport(verify, limits)
        except ImportError:  # the optional speed-up is not installed
            pass
    return httpx.AsyncHTTPTransport(verify=verify, limits=limits)


def _make_aiohttp_transport(verify: bool | str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    import aiohttp
    from httpx_aiohttp import AiohttpTransport
    from httpx_aiohttp.transport import AiohttpResponseStream

    class SafeAiohttpTransport(AiohttpTransport):
        """AiohttpTransport with errors mapped by whether the request could have been sent."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
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
            if isinstance(response.stream, AiohttpResponseStream):
                # 16 KiB pieces cost a Python iteration each; big downloads go faster in larger
                # ones (aiohttp hands over what it has, up to this size).
                response.stream.CHUNK_SIZE = STREAM_CHUNK_BYTES
            return response

    return SafeAiohttpTransport(verify=verify, limits=limits)
