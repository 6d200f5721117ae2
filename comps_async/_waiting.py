"""Waiting for simulations and work items with adaptive polling.

An experiment costs one request per poll (the Stats endpoint, §12); where a server does not offer
it, a ``fields=Id,SimulationState`` listing is used instead. Explicit simulation ids are polled
in batched list calls, and only those not yet finished. The interval starts short, grows while
nothing changes (up to a cap) and snaps back on any change; jitter keeps many waiters apart.
idmtools instead re-fetches every simulation every few seconds.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from uuid import UUID

import anyio

from ._query import Query
from ._resources.base import IdLike, as_id
from .errors import ApiError, MalformedResponseError, NotFoundError
from .models import TERMINAL_SIMULATION_STATES, TERMINAL_WORK_ITEM_STATES

if TYPE_CHECKING:
    from ._resources.peers import Peers

__all__ = ["WaitSettings", "WaitStatus", "watch"]

_TERMINAL = frozenset({str(s) for s in TERMINAL_SIMULATION_STATES | TERMINAL_WORK_ITEM_STATES})


@dataclass(frozen=True)
class WaitSettings:
    """Polling knobs: start at ``initial_interval_s``, multiply by ``backoff`` while nothing
    changes, never above ``max_interval_s``; ``jitter`` is the +- fraction added."""

    initial_interval_s: float = 1.0
    max_interval_s: float = 30.0
    backoff: float = 1.5
    jitter: float = 0.1
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False)


@dataclass(frozen=True)
class WaitStatus:
    """How many of the watched entities are in each state."""

    counts: dict[str, int]
    total: int
    polls: int = field(default=0, compare=False)

    @property
    def finished(self) -> bool:
        """True when every watched entity is Succeeded, Failed or Canceled."""
        return sum(n for s, n in self.counts.items() if s in _TERMINAL) == self.total

    @property
    def succeeded(self) -> int:
        """How many succeeded."""
        return self.counts.get("Succeeded", 0)

    @property
    def failed(self) -> int:
        """How many failed or were canceled."""
        return self.counts.get("Failed", 0) + self.counts.get("Canceled", 0)

    def __str__(self) -> str:
        parts = ", ".join(f"{state} {n}" for state, n in sorted(self.counts.items()))
        return f"{self.total} total: {parts or 'nothing yet'}"


Poll = Callable[[], Awaitable[dict[str, int]]]


async def watch(
    resources: Peers,
    *,
    experiment_id: IdLike | None = None,
    simulation_ids: Iterable[IdLike] | None = None,
    work_item_id: IdLike | None = None,
    settings: WaitSettings | None = None,
) -> AsyncIterator[WaitStatus]:
    """Yield the state counts now and after every change, until everything is finished."""
    settings = settings or WaitSettings()
    poll = _poller(resources, experiment_id, simulation_ids, work_item_id)
    interval = settings.initial_interval_s
    last: dict[str, int] | None = None
    polls = 0
    while True:
        counts = await poll()
        polls += 1
        status = WaitStatus(counts, sum(counts.values()), polls)
        if counts != last:
            yield status
            last = counts
            interval = settings.initial_interval_s
        else:
            interval = min(settings.max_interval_s, interval * settings.backoff)
        if status.finished:
            return
        spread = interval * settings.jitter
        await settings.sleep(max(0.0, interval + random.uniform(-spread, spread)))


def _poller(
    resources: Peers,
    experiment_id: IdLike | None,
    simulation_ids: Iterable[IdLike] | None,
    work_item_id: IdLike | None,
) -> Poll:
    given = [x is not None for x in (experiment_id, simulation_ids, work_item_id)]
    if sum(given) != 1:
        raise ValueError("wait for exactly one of experiment_id, simulation_ids, work_item_id")
    if experiment_id is not None:
        return _ExperimentPoll(resources, as_id(experiment_id)).poll
    if simulation_ids is not None:
        ids = [as_id(i) for i in simulation_ids]
        if not ids:
            raise ValueError("simulation_ids is empty")
        return _SimulationsPoll(resources, ids).poll
    assert work_item_id is not None
    wi_id = as_id(work_item_id)

    async def poll_work_item() -> dict[str, int]:
        item = await resources.work_items.get(wi_id, query=Query().select(["id", "state"]))
        return {str(item.state): 1}

    return poll_work_item


@dataclass
class _ExperimentPoll:
    resources: Peers
    experiment_id: UUID
    use_stats: bool = True

    async def poll(self) -> dict[str, int]:
        if self.use_stats:
            try:
                return await self.resources.experiments.stats(self.experiment_id)
            except (ApiError, MalformedResponseError) as exc:
                if isinstance(exc, ApiError) and exc.status not in (400, 404, 405, 501):
                    raise
            # Stats are unavailable here. An unknown id must raise, never read as "finished".
            await self.resources.experiments.get(self.experiment_id)
            self.use_stats = False
        query = Query().select(["id", "state"]).where([f"experiment_id={self.experiment_id}"])
        counts: Counter[str] = Counter()
        async for sim in self.resources.simulations.iterate(query):
            counts[str(sim.state)] += 1
        return dict(counts)


@dataclass
class _SimulationsPoll:
    resources: Peers
    pending: list[UUID]
    done: Counter[str] = field(default_factory=Counter)

    async def poll(self) -> dict[str, int]:
        sims = await self.resources.simulations.get_many(
            self.pending, query=Query().select(["id", "state"])
        )
        found = {s.id for s in sims}
        missing = [i for i in self.pending if i not in found]
        if missing:
            raise NotFoundError(404, f"no simulation with id {missing[0]}")
        running: Counter[str] = Counter()
        still: list[UUID] = []
        for sim in sims:
            state = str(sim.state)
            if state in _TERMINAL:  # finished ones are never asked about again
                self.done[state] += 1
            else:
                running[state] += 1
                assert sim.id is not None
                still.append(sim.id)
        self.pending = still
        return dict(self.done + running)
