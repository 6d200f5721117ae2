"""A blocking twin of ``Session`` for synchronous code (pyCOMPS-style scripts, Jupyter).

    from comps_async.sync import Session

    with Session("https://comps.idmod.org", username="me", password=...) as s:
        exp = s.experiments.create(ca.Experiment(name="x"))
        s.simulations.save_all(sims)
        s.wait(experiment_id=exp.id)
        for got in s.outputs.harvest(exp.id, ["output/InsetChart.json"], "out/"):
            ...

Every resource and method of the async Session is here with the same name and arguments; this
module only forwards. Each sync Session runs its own event loop in one background thread (an
anyio blocking portal), so it works where a loop is already running (Jupyter) as well as in plain
scripts. Async iterators (``iterate``, ``harvest``, ``watch``) become plain iterators.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from types import TracebackType
from typing import Any, Self

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .session import Session as AsyncSession

__all__ = ["Session"]


def _iterate(portal: BlockingPortal, iterator: AsyncIterator[Any]) -> Iterator[Any]:
    """A plain iterator over an async one, each step run in the portal's loop."""

    async def step() -> Any:
        return await iterator.__anext__()

    try:
        while True:
            try:
                yield portal.call(step)
            except StopAsyncIteration:
                return
    finally:
        closer = getattr(iterator, "aclose", None)
        if closer is not None:
            portal.call(closer)


class _Forward:
    """Forwards attribute access to an async object, running coroutines in the portal."""

    def __init__(self, portal: BlockingPortal, target: Any) -> None:
        self._portal = portal
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *args, **kwargs: self._portal.call(partial(attr, *args, **kwargs))
        if inspect.isasyncgenfunction(attr):
            return lambda *args, **kwargs: _iterate(self._portal, attr(*args, **kwargs))
        if callable(attr) and not isinstance(attr, type):
            return partial(self._call, attr)
        return self._wrap(attr)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self._portal.call(partial(fn, *args, **kwargs)))

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, AsyncIterator):
            return _iterate(self._portal, value)
        if _has_async_methods(value):
            return _Forward(self._portal, value)  # a resource: forward it too
        return value

    def __repr__(self) -> str:
        return f"sync({self._target!r})"


def _has_async_methods(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool | bytes | dict | list | tuple):
        return False
    return any(
        inspect.iscoroutinefunction(getattr(type(value), name, None))
        for name in dir(type(value))
        if not name.startswith("__")
    )


class Session(_Forward):
    """Blocking ``Session``: same arguments, same resources, same method names; use it in a
    ``with`` block or call ``close()``."""

    def __init__(self, *args: Any, backend: str = "asyncio", **kwargs: Any) -> None:
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(backend)
        portal = self._portal_cm.__enter__()
        try:
            # One task owns the async session from enter to exit, as anyio requires.
            self._session_cm = portal.wrap_async_context_manager(AsyncSession(*args, **kwargs))
            session = self._session_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        super().__init__(portal, session)

    def close(self) -> None:
        """Close the async session and stop its event loop thread."""
        try:
            self._session_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
