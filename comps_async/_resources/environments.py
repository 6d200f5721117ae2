"""The environments endpoints (§2.7): which compute environments the user can run in."""

from __future__ import annotations

from typing import Any

from .._requester import Requester
from .._responses import json_list
from ..errors import MalformedResponseError

__all__ = ["get", "names"]


async def names(requester: Requester) -> list[str]:
    """Names of the environments visible to the user."""
    response = await requester.request("GET", "environments")
    return [str(e.get("EnvironmentName")) for e in json_list(response, "Environments")]


async def get(requester: Requester, name: str) -> dict[str, Any]:
    """One environment: ``{"EnvironmentName", "GroupName", "Macros": {...}}``."""
    if not name or "/" in name:
        raise ValueError(f"invalid environment name {name!r}")
    response = await requester.request("GET", f"Environments/{name}")
    items = json_list(response, "Environments")
    if len(items) != 1:
        raise MalformedResponseError(f"expected one environment {name!r}, got {len(items)}")
    return dict(items[0])
