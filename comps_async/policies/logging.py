"""LoggingPolicy: one DEBUG line per attempt, one WARNING per failure; never a secret or a body."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import httpx

from ..pipeline import CallNext

__all__ = ["LoggingPolicy"]

# Allow-list: only these headers are ever logged (tokens and cookies never are).
_LOGGED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "content-range",
        "range",
        "retry-after",
        "retry-after-ms",
        "x-correlation-id",
    }
)


@dataclass
class LoggingPolicy:
    """Logs method, path, status, elapsed time and the server's correlation id."""

    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("comps_async.http"))

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        """Send ``request`` and log the attempt."""
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as exc:
            self._safely(
                logging.WARNING,
                "%s %s failed after %.3fs: %s",
                request.method,
                request.url.path,
                time.perf_counter() - started,
                type(exc).__name__,
            )
            raise
        level = logging.WARNING if response.status_code >= 500 else logging.DEBUG
        if self.logger.isEnabledFor(level):
            headers = {k: v for k, v in response.headers.items() if k in _LOGGED_HEADERS}
            self._safely(
                level,
                "%s %s -> %s in %.3fs %s",
                request.method,
                request.url.path,
                response.status_code,
                time.perf_counter() - started,
                headers,
            )
        return response

    def _safely(self, level: int, message: str, *args: object) -> None:
        # Logging must never break a call.
        with contextlib.suppress(Exception):
            self.logger.log(level, message, *args)
