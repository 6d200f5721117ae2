"""Host rules (§1) and the error tree."""

from __future__ import annotations

from uuid import uuid4

import pytest

import comps_async as ca
from comps_async.errors import error_for_status
from comps_async.hosts import Host


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
    assert "resumes" in str(ca.TransferError("reset"))
