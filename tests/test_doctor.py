"""`doctor` measures each inferred behaviour: against every ``Compat`` variation of the local
server its report must name the variation, and later sessions must adopt it."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

import comps_async as ca
from comps_async.cli.main import _register, cli
from comps_async.doctor import diagnose
from comps_async.local import Compat, LocalComps

from helpers import submit

pytestmark = pytest.mark.anyio
_register()

EXPECTED = {  # variation -> what doctor must report
    "as-inferred": (Compat(), {"ids_param": "accept", "content_range": "yes"}),
    "no-content-range": (Compat(content_range=False), {"content_range": "no"}),
    "range-ignored": (Compat(honour_range=False), {"range_requests": "no"}),
    "ids-ignored": (Compat(ids_param="ignore"), {"ids_param": "ignore"}),
    "ids-rejected": (Compat(ids_param="reject"), {"ids_param": "reject"}),
    "stats-query-only": (Compat(stats_forms=frozenset({"query"})), {"stats_forms": ["query"]}),
    "md5-base64": (Compat(listing_md5="base64"), {"listing_md5": "base64"}),
    "md5-none": (Compat(listing_md5="none"), {"listing_md5": "none"}),
}


async def _populate(s: ca.Session) -> None:
    """A few finished simulations with outputs, for the probes to look at."""
    experiment, _ = await submit(s, 3, "-c \"print('hello doctor')\"", "doctor")
    await s.wait(experiment_id=experiment, timeout=60)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_doctor_reports_what_the_host_does(
    tmp_path: Path, name: str, anyio_backend: str
) -> None:
    if anyio_backend == "trio":
        pytest.skip("probing is backend-independent; the variations run once")
    compat, expected = EXPECTED[name]
    async with LocalComps(tmp_path / "server", compat=compat) as server:
        async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
            await _populate(s)
            found = await diagnose(s, write=True)
        report = vars(found)
        for key, value in expected.items():
            assert report[key] == value, (key, report)
        assert found.tag_filter_exact == "yes" and found.partial_update_keeps_fields == "yes"
        assert found.tag_filter_case_insensitive == "yes" and found.upload_check_404 == "yes"
        assert rows_of(server) == 0  # the write probe's suite was deleted
        # A later session of the same host adopts what was measured.
        async with ca.Session(server.url, token=server.token, token_cache_dir=tmp_path) as s:
            assert s.capabilities.stats_forms == found.stats_forms
            assert s.capabilities.ids_param == found.ids_param


def rows_of(server: LocalComps) -> int:
    rows = server.store.query("SELECT COUNT(*) FROM entities WHERE kind='Suite' AND deleted=0", ())
    return int(rows[0][0])


async def test_the_doctor_command(server: LocalComps, tmp_path: Path) -> None:
    env = {"COMPS_SERVER": server.url, "COMPS_TOKEN": server.token, "HOME": str(tmp_path)}
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "no-runtime-dir")  # the record lands in HOME
    result = await anyio.to_thread.run_sync(
        lambda: CliRunner().invoke(cli, ["doctor", "--json"], env=env)
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["host"] == server.url and report["upload_check_404"] == "yes"
