"""Host rules (§1) and the error tree."""

from __future__ import annotations

import re
from pathlib import Path
from uuid import uuid4

import pytest

import comps_async as ca
from comps_async._hosts import Host
from comps_async.errors import error_for_status
from comps_async.local import LocalComps

from helpers import submit


@pytest.mark.parametrize(
    ("text", "base"),
    [
        ("comps.idmod.org", "https://comps.idmod.org"),
        ("http://internal.idmod.org", "http://internal.idmod.org"),
        ("localhost:54321", "https://localhost:54321"),
        ("https://comps.idmod.org:443/", "https://comps.idmod.org"),
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://127.0.0.1:8100", "http://127.0.0.1:8100"),
    ],
)
def test_host_normalisation(text: str, base: str) -> None:
    assert Host.parse(text).base == base


@pytest.mark.parametrize(
    "text", ["http://host/prefix", "ftp://host", "user@host", "[::1]:80", "", "http://host:99999"]
)
def test_bad_hosts_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        Host.parse(text)


def test_routing_and_rerooting() -> None:
    host = Host.parse("http://127.0.0.1:8100")
    assert host.url("Simulations/1") == "http://127.0.0.1:8100/api/Simulations/1"
    assert (
        host.url("/asset/Simulations/1/Output")
        == "http://127.0.0.1:8100/asset/Simulations/1/Output"
    )
    assert (
        host.reroot("https://other:1/asset/download/a_/b?x=1")
        == "http://127.0.0.1:8100/asset/download/a_/b?x=1"
    )
    with pytest.raises(ValueError, match="asset url"):
        host.reroot("https://other/files/x")
    assert host.cache_key == "http___127.0.0.1_8100"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, ca.ApiError),
        (401, ca.AuthenticationError),
        (403, ca.AuthenticationError),
        (404, ca.NotFoundError),
        (409, ca.ConflictError),
        (429, ca.RateLimitedError),
        (500, ca.ServerError),
        (503, ca.ServerError),
    ],
)
def test_status_to_error_class(status: int, cls: type[ca.ApiError]) -> None:
    assert error_for_status(status) is cls
    error = cls(status, "boom", correlation_id="c-1")
    assert isinstance(error, ca.CompsError)
    assert "boom" in str(error) and "c-1" in str(error)


def test_error_messages_say_what_to_do() -> None:
    md5 = uuid4()
    missing = ca.MissingAssetsError([md5], {md5: ["s0/config.json"]})
    assert "s0/config.json" in str(missing) and "from_path" in str(missing)
    batch = ca.BatchSaveError(saved=[1, 2], failed=[3], errors=[RuntimeError("x")])
    assert "2 saved, 1 not saved" in str(batch) and "failed" in str(batch)
    # Only what can resume says so: a failed status call cannot, a failed download can.
    assert "resumes" not in str(ca.TransferError("reset")) and "run it again" in str(
        ca.TransferError("reset")
    )
    assert "resumes" in str(ca.DeadlineExceededError("slow"))


@pytest.mark.anyio
async def test_https_to_a_plain_http_server_asks_did_you_mean_http(tmp_path: Path) -> None:
    """A host given without a scheme means https (pyCOMPS's rule); a plain-HTTP server then
    answers the TLS handshake with garbage (WRONG_VERSION_NUMBER): say what to type instead."""
    async with LocalComps(tmp_path / "server") as server:
        bare = server.url.removeprefix("http://")
        retry = ca.RetryPolicy(max_attempts=1)
        async with ca.Session(bare, token=server.token, token_cache_dir=tmp_path, retry=retry) as s:
            with pytest.raises(ca.TransferError, match=f"did you mean {re.escape(server.url)}\\?"):
                await s.suites.list()


@pytest.mark.anyio
async def test_a_missing_output_path_points_at_the_listing(session: ca.Session) -> None:
    """Not "check the entity type": the entity exists, the path does not."""
    experiment, (sim,) = await submit(session, 1, "-c \"print('ok')\"", name="missing-path")
    await session.wait(experiment_id=experiment.id, timeout=60)
    with pytest.raises(ca.NotFoundError) as caught:
        await session.outputs.read(sim, "output/nope.json")
    assert "outputs.info" in str(caught.value) and "entity type" not in str(caught.value)
