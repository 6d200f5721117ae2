"""Bounded fan-out and deadlines shared by resources and transfers."""

from __future__ import annotations

import itertools
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

from .errors import DeadlineExceededError

__all__ = [
    "AdaptiveLimit",
    "BoundedStream",
    "Spawn",
    "achunks",
    "aiter_any",
    "deadline",
    "first_error",
    "for_each_bounded",
    "gather_bounded",
]

T = TypeVar("T")
R = TypeVar("R")


async def for_each_bounded(
    items: Iterable[T],
    fn: Callable[[T], Awaitable[R]],
    concurrency: int,
    on_done: Callable[[int, R], object] | None = None,
) -> None:
    """``fn`` over ``items`` with at most ``concurrency`` calls running, each worker pulling the
    next item as it frees up: no task, result or wait per item, so a million items cost what
    ten do. ``on_done(index, result)`` sees each result as it comes.

    After the first failure nothing new starts, and that failure is raised as itself (not as an
    exception group), with a note saying how many calls failed.
    """
    pending = enumerate(items)
    errors: list[Exception] = []
    started = 0

    async def worker() -> None:
        nonlocal started
        for index, item in pending:  # shared: each worker takes the next one
            if errors:
                return
            started += 1
            try:
                result = await fn(item)
                if on_done is not None:
                    on_done(index, result)
            except Exception as exc:  # (a callback's too: raised as itself, as fn's)
                errors.append(exc)
                return

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, concurrency)):
            tg.start_soon(worker)
    if errors:
        if started > 1:
            errors[0].add_note(
                f"{len(errors)} of {started} calls failed; later ones were not started"
            )
        raise errors[0]


async def gather_bounded(
    items: Iterable[T], fn: Callable[[T], Awaitable[R]], concurrency: int
) -> list[R]:
    """``fn`` over ``items`` with at most ``concurrency`` running; results in input order
    (failures as ``for_each_bounded``)."""
    todo = list(items)
    results: list[Any] = [None] * len(todo)

    def keep(index: int, result: R) -> None:
        results[index] = result

    await for_each_bounded(todo, fn, concurrency, keep)
    return results


@dataclass(frozen=True)
class _SourceFailed:
    """Pulling the items failed (not one item's work): re-raised in the consumer."""

    error: BaseException


# Runs a coroutine function in background work that outlives the caller (Requester.spawn).
Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


_STOP_WAIT_S = 10.0  # how long closing a stream waits for its cancelled work to stop


@asynccontextmanager
async def _closing(items: AsyncIterable[T]) -> AsyncIterator[AsyncIterable[T]]:
    """``items``, closed on the way out if it can be (an async generator left unfinished by a
    cancellation is otherwise finalized by the event loop, which trio reports as a
    ResourceWarning)."""
    try:
        yield items
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()


class BoundedStream(Generic[R]):
    """``work(item, emit)`` over ``items``, at most ``limit`` at once (a number, or an
    ``AdaptiveLimit`` that follows the items finished per second), iterated as what the work
    emits, as it comes (harvest, analyze, the output listings ahead of them).

    The work runs in ``spawn``'s task group (a session's background group), not in the
    iterating task: a consumer may stop at any point, from any task. A slot is taken before an
    item is pulled, so the source never runs ahead of the work and memory stays bounded however
    many items there are. If pulling items fails, that error is raised to the consumer.

    ``aclose()`` stops the work and returns once it has stopped (no request of it starts
    after). A stream dropped without being closed (``async for ... break`` with no ``async
    with``) stops its work as soon as it is garbage: it is a plain object, not an async
    generator, and the work holds no reference back to it — nothing is left running and no
    stream or generator is left for the event loop to finalize.
    """

    def __init__(
        self,
        spawn: Spawn,
        items: AsyncIterable[T],
        work: Callable[[T, Callable[[R], Awaitable[None]]], Awaitable[None]],
        limit: int | AdaptiveLimit,
        buffer: int,
    ) -> None:
        adaptive = limit if isinstance(limit, AdaptiveLimit) else AdaptiveLimit(limit, limit)
        send, self._receive = anyio.create_memory_object_stream[R | _SourceFailed](buffer)
        self._scope = scope = anyio.CancelScope()
        self._finished = finished = anyio.Event()

        async def produce() -> None:  # (holds no reference to self: see the docstring)
            slots = adaptive.limiter  # its size may change while items run

            async def run(item: T, slot: object) -> None:
                try:
                    await work(item, send.send)
                finally:
                    slots.release_on_behalf_of(slot)
                adaptive.moved(1)

            try:
                with scope, send:
                    try:
                        async with anyio.create_task_group() as tg, _closing(items) as source:
                            async for item in source:
                                slot = object()  # released by the item's task, not this one
                                await slots.acquire_on_behalf_of(slot)
                                tg.start_soon(run, item, slot)
                    except Exception as exc:  # e.g. the experiment does not exist
                        with suppress(anyio.BrokenResourceError):  # (nobody is listening)
                            await send.send(_SourceFailed(first_error(exc)))
            finally:
                finished.set()

        spawn(produce)

    def __aiter__(self) -> BoundedStream[R]:
        return self

    async def __anext__(self) -> R:
        try:
            got = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        if isinstance(got, _SourceFailed):
            await self.aclose()
            raise got.error
        return got

    async def aclose(self) -> None:
        """Stop the work and wait until it has stopped (idempotent)."""
        self._stop()
        # Shielded: a consumer closing because it was cancelled still waits; the work,
        # cancelled, ends at its next checkpoint.
        with anyio.CancelScope(shield=True), anyio.move_on_after(_STOP_WAIT_S):
            await self._finished.wait()

    def _stop(self) -> None:
        self._receive.close()
        if not self._finished.is_set():
            self._scope.cancel()

    def __del__(self) -> None:  # dropped without aclose(): stop the work now
        # (Collected after its event loop ended, it has nothing left to stop: that loop's
        # tasks ended with it, and cancelling needs a running loop.)
        with suppress(RuntimeError):
            self._stop()


async def aiter_any(items: Iterable[T] | AsyncIterable[T]) -> AsyncGenerator[T, None]:
    """Iterate a plain or an async iterable the same way."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def achunks(
    items: Iterable[T] | AsyncIterable[T], size: int
) -> AsyncGenerator[list[T], None]:
    """A plain or an async iterable in lists of ``size`` (the last one shorter); nothing is
    read ahead of the list being filled."""
    if isinstance(items, AsyncIterable):
        chunk: list[T] = []
        async for item in items:
            chunk.append(item)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    else:
        iterator = iter(items)
        while chunk := list(itertools.islice(iterator, size)):
            yield chunk


def first_error(group: BaseException) -> BaseException:
    """The first leaf of an exception group (task groups wrap a single failure)."""
    while isinstance(group, BaseExceptionGroup) and group.exceptions:
        group = group.exceptions[0]
    return group


@contextmanager
def deadline(seconds: float | None, what: str, url: str | None = None) -> Iterator[None]:
    """A scope that ends its block after ``seconds`` (None: never) with
    ``DeadlineExceededError`` naming ``what``."""
    try:
        with anyio.fail_after(seconds):
            yield
    except TimeoutError:
        raise DeadlineExceededError(f"{what} did not finish within {seconds} s", url=url) from None


class AdaptiveLimit:
    """How many transfers to keep in flight, found by measuring: every ``window_s`` the bytes
    (or other units of work: a save counts entities) moved give a throughput; while it grows
    by more than a tenth, the limit doubles (up to ``maximum``); when it stays, the limit
    stays; when it falls by more than a fifth, the limit shrinks by a quarter (down to
    ``minimum``) and probing starts again from there. A link capped per connection fills up
    with more streams; a fast link, where more streams only add per-request latency, keeps
    few. ``maximum`` is the memory bound and never moves."""

    def __init__(
        self,
        initial: int,
        maximum: int,
        *,
        minimum: int = 1,
        window_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")
        self.minimum, self.maximum, self.window_s = minimum, maximum, window_s
        self._limit = initial
        self._limiter: anyio.CapacityLimiter | None = None
        self._clock = clock
        self._since: float | None = None
        self._bytes = 0
        self._best = 0.0

    @property
    def limit(self) -> int:
        """The number of transfers allowed in flight now."""
        return self._limit

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """The limiter to hold while transferring (created in the running event loop)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._limit)
        return self._limiter

    def moved(self, nbytes: int) -> None:
        """Count ``nbytes`` transferred; adjust the limit at the end of each window."""
        now = self._clock()
        if self._since is None or now - self._since > 4 * self.window_s:
            # The first bytes, or the first after a pause (nothing was in flight): a window
            # that spans idle time says nothing about the link.
            self._since, self._bytes = now, nbytes
            return
        self._bytes += nbytes
        elapsed = now - self._since
        if elapsed < self.window_s:
            return
        rate = self._bytes / elapsed
        self._since, self._bytes = now, 0
        if rate > self._best * 1.1:
            self._best = rate
            self._set(min(self.maximum, self._limit * 2))
        elif rate < self._best * 0.8:
            self._best = rate
            self._set(max(self.minimum, self._limit - max(1, self._limit // 4)))

    def back_off(self) -> None:
        """The server asked to slow down (429, 503): shrink by a quarter now and measure
        afresh from there."""
        self._set(max(self.minimum, self._limit - max(1, self._limit // 4)))
        self._since, self._bytes = None, 0

    def _set(self, limit: int) -> None:
        self._limit = limit
        if self._limiter is not None:
            self._limiter.total_tokens = limit
