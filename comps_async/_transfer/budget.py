"""A session-wide byte budget: every transfer that holds file bytes in memory takes its share
first, so memory stays bounded whatever the sizes and numbers of files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["ByteBudget"]


class ByteBudget:
    """At most ``total_bytes`` held at once; a request larger than the total waits for all."""

    def __init__(self, total_bytes: int) -> None:
        if total_bytes <= 0:
            raise ValueError("the byte budget must be positive")
        self.total_bytes = total_bytes
        self._available = total_bytes
        self._condition: anyio.Condition | None = None

    @property
    def available_bytes(self) -> int:
        """Bytes not held right now."""
        return self._available

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        """Hold ``nbytes`` of the budget for the duration of the block."""
        if self._condition is None:  # created in the running event loop
            self._condition = anyio.Condition()
        share = min(max(nbytes, 0), self.total_bytes)
        async with self._condition:
            while self._available < share:
                await self._condition.wait()
            self._available -= share
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                async with self._condition:
                    self._available += share
                    self._condition.notify_all()
