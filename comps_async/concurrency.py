"""Bounded fan-out and deadlines shared by resources and transfers."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio

from .errors import DeadlineExceededError

__all__ = ["aiter_any", "deadline", "first_error", "gather_bounded"]

T = TypeVar("T")
R = TypeVar("R")


async def gather_bounded(
    items: Iterable[T], fn: Callable[[T], Awaitable[R]], concurrency: int
) -> list[R]:
    """``fn`` over ``items`` with at most ``concurrency`` running; results in input order.

    After the first failure nothing new starts, and that failure is raised as itself (not as an
    exception group), with a note saying how many calls failed.
    """
    todo = list(items)
    results: list[Any] = [None] * len(todo)
    errors: list[Exception] = []
    limiter = anyio.CapacityLimiter(max(1, concurrency))

    async def one(index: int, item: T) -> None:
        async with limiter:
            if errors:
                return
            try:
                results[index] = await fn(item)
            except Exception as exc:
                errors.append(exc)

    async with anyio.create_task_group() as tg:
        for index, item in enumerate(todo):
            tg.start_soon(one, index, item)
    if errors:
        if len(todo) > 1:
            errors[0].add_note(
                f"{len(errors)} of {len(todo)} calls failed; later ones were not started"
            )
        raise errors[0]
    return results


async def aiter_any(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """Iterate a plain or an async iterable the same way."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


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
