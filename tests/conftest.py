from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import comps_async as ca
from comps_async.local import FaultConfig, LocalComps, sir_configuration

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(comps_server: LocalComps) -> Iterator[LocalComps]:
    """The shared local server with fault injection reset around each test."""
    comps_server.faults.configure(FaultConfig())
    comps_server.faults.counters.clear()
    yield comps_server
    comps_server.faults.configure(FaultConfig())


@pytest.fixture
async def session(server: LocalComps, tmp_path: Path) -> AsyncIterator[ca.Session]:
    async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
        yield s


@pytest.fixture
async def experiment(session: ca.Session) -> AsyncIterator[ca.Experiment]:
    """An experiment that runs the built-in SIR model. Its queued work is canceled afterwards so
    that the shared server's runner is free for the next test."""
    created = await session.experiments.create(
        ca.Experiment(
            name="exp",
            configuration=sir_configuration(),
        )
    )
    yield created
    await session.experiments.cancel(created)


@pytest.fixture(scope="session", autouse=True)
def _isolated_user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the fingerprint cache of the tests out of the user's home."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield
