"""RetryPolicy: exponential backoff with jitter, honouring Retry-After, in the SDK's one attempt
loop (``_failures.Attempts``, whose stop is tenacity's).

The decisions are plain functions so they can be tested without a network; the policy only
awaits and sleeps, through an injectable ``sleep``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import httpx

from .._failures import Attempts, Failure, classify, classify_answer
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
        kind: Failure | None = classify(error)
    else:
        kind = classify_answer(response.status_code) if response is not None else None
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

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        """Send ``request``, retrying what is safe to retry (see ``should_retry``) in the SDK's
        one attempt loop (``_failures.Attempts``: this policy's backoff, tenacity's stop, the
        call's deadline). Out of attempts, the last answer is returned (the Session raises the
        typed error for it) or the last transport error raised."""
        attempts = Attempts(
            self,
            int(option(request, OPTION_MAX_ATTEMPTS, self.max_attempts)),
            option(request, OPTION_DEADLINE),
        )
        async for _ in attempts:
            try:
                response = await call_next(request)
            except httpx.TransportError as exc:
                if not should_retry(request, None, exc):
                    raise
                attempts.failed(exc)
                continue
            if not should_retry(request, response, None):
                return response
            # Read (a short error body) and so release the connection while we wait; the
            # answer stays whole for the typed error if it is the last.
            await response.aread()
            attempts.failed(response)
        if isinstance(attempts.last, httpx.Response):
            return attempts.last
        assert attempts.last is not None
        raise attempts.last
