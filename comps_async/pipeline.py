"""The request pipeline: a chain of policies in front of the transport.

A policy is any object with ``async def send(request, call_next) -> httpx.Response``. The Session
builds the chain, outermost first::

    RetryPolicy -> AuthPolicy -> *your policies -> ConcurrencyPolicy -> LoggingPolicy -> transport

Retry is outermost so that every attempt is re-authenticated and takes its own concurrency slot
(none is held while backing off); logging is innermost so that it sees each real attempt.

Per-call options travel in ``request.extensions`` under keys a policy owns (see ``OPTION_*``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import httpx

__all__ = [
    "OPTION_DEADLINE",
    "OPTION_IDEMPOTENT",
    "OPTION_MAX_ATTEMPTS",
    "OPTION_NO_AUTH",
    "OPTION_STREAM",
    "CallNext",
    "Pipeline",
    "Policy",
    "option",
]

CallNext = Callable[[httpx.Request], Awaitable[httpx.Response]]

OPTION_MAX_ATTEMPTS = "comps_async.max_attempts"  # RetryPolicy: attempts for this call
OPTION_IDEMPOTENT = "comps_async.idempotent"  # RetryPolicy: safe to repeat (overrides method)
OPTION_NO_AUTH = "comps_async.no_auth"  # AuthPolicy: send without a token (the /tokens calls)
OPTION_STREAM = "comps_async.stream"  # transport: leave the body unread for streaming
OPTION_DEADLINE = "comps_async.deadline"  # RetryPolicy: time.monotonic() the call must end by


def option(request: httpx.Request, key: str, default: Any = None) -> Any:
    """A per-call option of ``request``."""
    return request.extensions.get(key, default)


@runtime_checkable
class Policy(Protocol):
    """One step of the pipeline. Call ``call_next(request)`` to go on; return its response or
    your own; raise to fail the call."""

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        """Handle ``request``."""
        ...


def _link(policy: Policy, call_next: CallNext) -> CallNext:
    async def step(request: httpx.Request) -> httpx.Response:
        return await policy.send(request, call_next)

    return step


class Pipeline:
    """Runs a request through ``policies`` (outermost first) and then ``transport``."""

    def __init__(self, policies: Sequence[Policy], transport: CallNext) -> None:
        self.policies = tuple(policies)
        for policy in self.policies:
            if not isinstance(policy, Policy):
                raise TypeError(
                    f"{policy!r} is not a Policy: it needs async send(request, call_next)"
                )
        chain = transport
        for policy in reversed(self.policies):
            chain = _link(policy, chain)
        self._chain = chain

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through every policy."""
        return await self._chain(request)
