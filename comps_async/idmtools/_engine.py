"""The async Session an idmtools platform drives from idmtools' own (blocking) threads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._session import Session

__all__ = ["Engine"]

T = TypeVar("T")


class Engine:
    """One ``Session`` on an event loop of its own (an anyio blocking portal), so it serves
    idmtools' threads, scripts and Jupyter (a running loop) alike; ``call`` runs an async
    function there and waits for it."""

    def __init__(self, url: str, token: str) -> None:
        session = Session(url, token=token)  # arguments checked before a thread starts
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._session_cm = self._portal.wrap_async_context_manager(session)
            self.session = self._session_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the engine's loop and return its result."""
        return self._portal.call(partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Close the session and stop its loop."""
        try:
            self._session_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)
