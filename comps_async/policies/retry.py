"""RetryPolicy: exponential backoff with jitter (tenacity), honouring Retry-After.

The decisions are plain functions so they can be tested without a network; the policy only
awaits and sleeps, through an injectable ``sleep``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
)
from tenacity.stop import stop_base

from .._failures import Failure, classify, classify_answer
from ..errors import retry_after_s
from ..pipeline import OPTION_DEADLINE, OPTION_IDEMPOTENT, OPTION_MAX_ATTEMPTS, CallNext, option

__all__ = ["RetryPolicy", "is_idempotent", "should_retry"]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def is_idempotent(request: httpx.Request) -> bool:
    """Whether repeating ``request`` cannot change the outcome (method, or per-call option)."""
    flag = option(request, OPTION_IDEMPOTENT)
    return bool(flag) if flag is not None else request.method in IDEMPOTENT_METHODS


def should_retry(
    request: httpx.Request, response: httpx.Response | None, error: BaseException | None
) -> bool:
    """By the one classifier (``_failures.classify``): any call that was never sent (no
    connection, or 429) is sent again; one that may have happened (a broken connection, a
    timeout, 408, 5xx) only when repeating it cannot change the outcome. A POST that may have
    been processed is never repeated here: creates look up their idempotency key first (see
    _transfer/exactly_once.py)."""
    if error is not None:
        kind = classify(error) if isinstance(error, httpx.TransportError) else Failure.DEFINITE
    else:
        kind = (classify_answer(response.status_code) if response is not None else None) or (
            Failure.DEFINITE
        )
    if kind is Failure.NEVER_SENT:
        return True
    return kind is Failure.MAYBE and is_idempotent(request)


@dataclass
class RetryPolicy:
    """Retries what is safe to retry, with exponential backoff and full jitter, or the server's
    Retry-After (capped at ``max_retry_after_s``). ``max_attempts`` counts the first try
    (``create_attempts`` for creates, which look up before re-sending); a
    call's deadline (``timeout=`` of a request) stops the retries before a wait would pass it."""

    max_attempts: int = 5
    # Attempts of one create or batch of creates, each after an ambiguous failure preceded by
    # a look-up of its idempotency keys (_transfer/exactly_once.py), so more than a request's.
    create_attempts: int = 8
    backoff_base_s: float = 0.25
    backoff_max_s: float = 20.0
    max_retry_after_s: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay_s(self, attempt: int, retry_after: float | None = None) -> float:
        """How long to wait after failed attempt ``attempt`` (1-based): the server's
        ``retry_after`` (capped), else exponential backoff with full jitter. Every retry loop
        of the SDK waits this long, through ``sleep``."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return self.rng.uniform(0, ceiling)

    def backoff_s(self, attempt: int, response: httpx.Response | None) -> float:
        """How long to wait before attempt ``attempt + 1`` after ``response``."""
        return self.delay_s(attempt, retry_after_s(response))

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        """Send ``request``, retrying what is safe to retry (see ``should_retry``)."""
        attempts = int(option(request, OPTION_MAX_ATTEMPTS, self.max_attempts))

        # The first attempt is made here: most calls succeed at once, and setting tenacity up
        # costs more client CPU than the rest of a request's policies together. When it must
        # be retried, tenacity takes over and replays its outcome as attempt 1.
        async def attempt_once() -> httpx.Response:
            try:
                return await call_next(request)
            except httpx.TransportError as exc:
                if not should_retry(request, None, exc):
                    raise
                raise _Retryable(exc) from exc

        first: httpx.Response | _Retryable
        try:
            first = await attempt_once()
        except _Retryable as exc:
            if attempts <= 1:
                raise exc.error from exc.error.__cause__
            first = exc
        else:
            if attempts <= 1 or not should_retry(request, first, None):
                return first
        replay = [first]

        async def attempt() -> httpx.Response:
            if not replay:
                return await attempt_once()
            outcome = replay.pop()
            if isinstance(outcome, _Retryable):
                raise outcome
            return outcome

        async def release(state: RetryCallState) -> None:
            # A response we are about to retry past is closed so its connection is reused.
            if state.outcome is not None and not state.outcome.failed:
                await state.outcome.result().aclose()

        def wait(state: RetryCallState) -> float:
            outcome = state.outcome
            response = None if outcome is None or outcome.failed else outcome.result()
            return self.backoff_s(state.attempt_number, response)

        stop: stop_base = stop_after_attempt(max(1, attempts))
        deadline = option(request, OPTION_DEADLINE)
        if deadline is not None:  # no wait that would end past the call's deadline
            stop = stop | stop_before_delay(max(0.0, deadline - time.monotonic()))
        retrying = AsyncRetrying(
            stop=stop,
            wait=wait,
            retry=(
                retry_if_result(lambda r: should_retry(request, r, None))
                | _retry_if_retryable_error
            ),
            sleep=self.sleep,
            before_sleep=release,
            reraise=True,
            retry_error_callback=_last_outcome,
        )
        try:
            return await retrying(attempt)
        except _Retryable as exc:
            raise exc.error from exc.error.__cause__


class _Retryable(Exception):
    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


def _retry_if_retryable_error(state: RetryCallState) -> bool:
    return state.outcome is not None and isinstance(state.outcome.exception(), _Retryable)


def _last_outcome(state: RetryCallState) -> httpx.Response:
    # Out of attempts: hand back the last response so the Session raises the typed ApiError for
    # it, or re-raise the last transport error.
    assert state.outcome is not None
    return state.outcome.result()  # type: ignore[no-any-return]
