"""ConcurrencyPolicy: at most N requests of one session in flight."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import httpx

from .._constants import DEFAULT_MAX_CONCURRENT_REQUESTS
from ..pipeline import CallNext

__all__ = ["ConcurrencyPolicy"]


@dataclass
class ConcurrencyPolicy:
    """One limiter per session; a slot is held for the request, not while a caller reads a
    streamed body (downloads bound their bytes in flight themselves)."""

    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    _limiter: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        """Send ``request`` once a slot of the session's limiter is free."""
        limiter = self._limiter
        if limiter is None:  # created lazily: needs a running event loop
            limiter = self._limiter = anyio.CapacityLimiter(self.max_concurrent_requests)
        try:  # a free slot is taken without a trip through the event loop (first come, first
            limiter.acquire_nowait()  # served still: it refuses while others wait)
        except anyio.WouldBlock:
            await limiter.acquire()
        try:
            return await call_next(request)
        finally:
            limiter.release()
