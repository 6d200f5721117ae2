"""The dashboard page, its data and the queue metrics (§12)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..auth import DEFAULT_ENVIRONMENT, User
from ..dashboard import ACTIVE_STATES, PAGE, History, snapshot
from ..state import ServerState
from ..store import (
    NotFound,
)
from ..web import (
    params,
)

__all__ = ["DashboardRoutes"]

logger = logging.getLogger(__name__)


@dataclass
class DashboardRoutes:
    """The dashboard's views; ``history`` holds its sampled past."""

    state: ServerState
    history: History | None = None

    async def dashboard_page(self, request: Request) -> Response:
        # The page itself holds no data; it fetches /dashboard/data with the token given in
        # its URL's fragment (#token=..., never sent to a server), which requires
        # authentication like every other route.
        return HTMLResponse(PAGE)

    async def dashboard_data(self, request: Request) -> Response:
        user: User = request.state.user
        history = list(self.history.samples) if self.history is not None else []
        now = await self.state.db(snapshot, self.state.store)
        return JSONResponse({"user": user.username, "now": now, "history": history})

    async def metrics_queue(self, request: Request) -> Response:
        """``GET /api/Metrics/Queue?EnvironmentName=`` (the COMPS dashboard's QueueView, §12):
        experiments with simulations waiting or running, in buckets by priority name."""
        environment = params(request).get("environmentname") or DEFAULT_ENVIRONMENT
        if environment.lower() != DEFAULT_ENVIRONMENT.lower():
            raise NotFound(f"no environment {environment!r}")
        state: dict[str, list[dict[str, Any]]] = {}
        for bucket in await self.state.db(self.state.store.queue, ACTIVE_STATES):
            state.setdefault(str(bucket.pop("Priority")), []).append(bucket)
        return JSONResponse({"QueueState": state})
