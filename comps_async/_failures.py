"""One classifier of failures and one attempt loop, for every retry in the SDK: the retry
policy (one request), the exactly-once create loop and the download engine.

A failure is one of three kinds, and only the kind decides what may happen next:

- ``NEVER_SENT``: the server cannot have acted on it — no connection was made, or it answered
  429, which COMPS (like every ServiceStack service) sends before processing (PROTOCOL.md
  row 3). Anything may be sent again, a create included.
- ``MAYBE``: it may have happened — a connection that broke after sending, a timeout, 408 or
  a 5xx, a 2xx whose body cannot be read. Only what cannot change the outcome when repeated
  (a GET, a PUT, a download that resumes) is sent again; a create first looks up its keys.
- ``DEFINITE``: the answer is the answer (4xx, a wrong checksum, bad input); never retried.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Protocol

import httpx
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, stop_before_delay
from tenacity.stop import stop_base

from .errors import (
    ApiError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
    TransferError,
    retry_after_s,
)

__all__ = ["Attempts", "Backoff", "Failure", "classify", "classify_answer"]


class Failure(Enum):
    """What a failed call may have done on the server."""

    NEVER_SENT = "never sent"
    MAYBE = "may have happened"
    DEFINITE = "definite answer"


# Errors raised before a request could reach the server.
_NOT_CONNECTED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Answers after which the same request may succeed (408 and 5xx: the server may have acted).
_TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})


def classify_answer(status: int) -> Failure | None:
    """The kind of failure an HTTP answer is, or None when it is not one to retry past."""
    if status == 429:
        return Failure.NEVER_SENT
    if status in _TRANSIENT_STATUSES:
        return Failure.MAYBE
    return None


def classify(error: BaseException) -> Failure:
    """The kind of failure ``error`` is, whether raised by httpx (inside the pipeline) or
    already mapped to the SDK's errors (above it)."""
    if isinstance(error, _NOT_CONNECTED) or isinstance(error.__cause__, _NOT_CONNECTED):
        return Failure.NEVER_SENT
    if isinstance(error, RateLimitedError):
        return Failure.NEVER_SENT
    if isinstance(error, httpx.TransportError | TransferError | ServerError):
        return Failure.MAYBE
    if isinstance(error, MalformedResponseError):  # a 2xx that cannot be read: it happened?
        return Failure.MAYBE
    if isinstance(error, ApiError) and classify_answer(error.status) is not None:
        return Failure.MAYBE
    return Failure.DEFINITE


def _retry_after(failure: BaseException | httpx.Response | None) -> float | None:
    if isinstance(failure, ApiError):
        return failure.retry_after_s
    if isinstance(failure, httpx.Response):
        return retry_after_s(failure)
    return None


class Backoff(Protocol):
    """How long to wait between attempts, and the sleep to wait with (``RetryPolicy``)."""

    @property
    def sleep(self) -> Callable[[float], Awaitable[None]]: ...

    def delay_s(self, attempt: int, retry_after: float | None = None) -> float: ...


class Attempts:
    """The attempts of one operation: ``async for attempt in Attempts(retry, most)``. At most
    ``most`` attempts; before each one after the first, the retry policy's wait for the last
    failure (``failed(error)``; the server's Retry-After honoured) through its ``sleep``; no wait
    that would end after ``deadline`` (a ``time.monotonic()`` instant). ``again_now()`` makes
    the next attempt start without waiting (a failure that was just repaired). When to stop is
    tenacity's decision (``stop_after_attempt``, ``stop_before_delay``) on its own state."""

    def __init__(self, retry: Backoff, most: int, deadline: float | None = None) -> None:
        self._retry = retry
        self._most = max(1, most)
        self._deadline = deadline
        # tenacity's state and stop, made at the first failure (most calls never fail).
        self._state: RetryCallState | None = None
        self._stop: stop_base | None = None
        self.last: BaseException | httpx.Response | None = None  # the last failure
        self._started = False
        self._wait = False

    def failed(self, failure: BaseException | httpx.Response) -> None:
        """The attempt failed: an error, or an answer to retry past (the caller decided, by
        ``classify`` or ``classify_answer``)."""
        self.last = failure
        self._wait = True

    def again_now(self) -> None:
        """The next attempt starts at once."""
        self._wait = False

    # A plain async iterator, not an async generator: a loop left by ``return`` leaves nothing
    # for the event loop to finalize.
    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> int:
        if not self._started:
            self._started = True
            return 1
        state, stop = self._state, self._stop
        if state is None or stop is None:
            state = self._state = RetryCallState(AsyncRetrying(), None, (), {})
            stop = stop_after_attempt(self._most)
            if self._deadline is not None:
                stop = stop | stop_before_delay(max(0.0, self._deadline - time.monotonic()))
            self._stop = stop
        delay = (
            self._retry.delay_s(state.attempt_number, _retry_after(self.last))
            if self._wait
            else 0.0
        )
        state.upcoming_sleep = delay
        state.outcome_timestamp = time.monotonic()  # (when the failure was seen: tenacity's clock)
        if stop(state):
            raise StopAsyncIteration
        if self._wait:
            await self._retry.sleep(delay)
            state.idle_for += delay
        state.attempt_number += 1
        self._wait = True
        return state.attempt_number
