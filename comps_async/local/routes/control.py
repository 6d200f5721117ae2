"""Local-only knobs: fault injection and per-route counters, for tests and benchmarks."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..faults import FaultConfig, FaultInjector
from ..store import (
    BadRequest,
    NotFound,
)
from ..web import (
    json_body,
)

__all__ = ["ControlRoutes"]

logger = logging.getLogger(__name__)


@dataclass
class ControlRoutes:
    """Switch faults on and off; read what each route was asked."""

    faults: FaultInjector | None = None

    async def set_faults(self, request: Request) -> Response:
        if self.faults is None:
            raise NotFound("fault injection is not enabled on this server")
        body = await json_body(request)
        known = {f.name for f in dataclass_fields(FaultConfig)}
        unknown = set(body) - known
        if unknown:
            raise BadRequest(f"unknown fault settings: {', '.join(sorted(unknown))}")
        self.faults.configure(FaultConfig(**body))
        return JSONResponse({})

    async def counters(self, request: Request) -> Response:
        if self.faults is None:
            raise NotFound("fault injection is not enabled on this server")
        return JSONResponse(
            {
                "Counters": dict(self.faults.counters),
                "Injected": dict(self.faults.injected),
                "BytesSent": dict(self.faults.bytes_sent),
            }
        )
