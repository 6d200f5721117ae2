"""pytest plugin (entry point ``pytest11``): a real local COMPS server for your own tests.

    @pytest.mark.anyio
    async def test_my_pipeline(comps_server):
        async with comps_async.Session(comps_server.url, token=comps_server.token) as s:
            ...

``comps_server`` is one server per test session (data in a temporary directory), listening on
127.0.0.1 on a free port; ``comps_server.faults`` switches fault injection on and off. The
server (Starlette, uvicorn) is imported only by a test that asks for it, not by every pytest
run of everyone who installs the SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .local.server import LocalComps

__all__ = ["comps_server"]


@pytest.fixture(scope="session")
def comps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalComps]:
    """A running local COMPS server shared by the test session."""
    from .local.server import LocalComps

    with LocalComps(tmp_path_factory.mktemp("comps-server")) as server:
        yield server
