"""``diagnose``: measure, on a real host, each COMPS behaviour the SDK otherwise infers
(PROTOCOL.md), and remember the answers per host so that later sessions adapt instead of guess.

Read-only by default: it lists a few existing entities and outputs. ``write=True`` also creates
one small suite, probes tag filters and a partial update on it, and deletes it.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

import anyio

from ._capabilities import (
    Capabilities,
    ListingMd5,
    capabilities_path,
    load_capabilities,
    save_capabilities,
)
from ._query import Query
from ._resources.base import IDS_PARAM, parse_content_range
from ._responses import json_body, json_list
from .errors import ApiError, CompsError
from .models import Suite
from .models.outputs import md5_hex

if TYPE_CHECKING:
    from ._session import Session

__all__ = [
    "Capabilities",
    "capabilities_path",
    "diagnose",
    "load_capabilities",
    "save_capabilities",
]

logger = logging.getLogger(__name__)


async def diagnose(session: Session, *, write: bool = False) -> Capabilities:
    """Probe ``session``'s host and return what it answered; the session adopts the answers and
    they are saved beside the token cache for later sessions of the same host."""
    found = Capabilities(host=session.host.base)
    info = await session.tokens.info()
    if info is not None:
        found.token_kind = "System" if info.system else "Auth"
    await _probe_lists(session, found)
    await _probe_stats(session, found)
    await _probe_outputs(session, found)
    await _probe_upload_check(session, found)
    if write:
        await _probe_writes(session, found)
    found.shared_parts = session.capabilities.shared_parts  # learned by saves, not probed
    session.adopt(found)
    await anyio.to_thread.run_sync(save_capabilities, session.capabilities_file, found)
    return found


async def _probe_lists(session: Session, found: Capabilities) -> None:
    response = await session.request(
        "GET", "Simulations", params={"fields": "Id", "count": "2", "offset": "0"}
    )
    rows = json_list(response, "Simulations")
    total = parse_content_range(response.headers.get("content-range"))
    if len(rows) == 2:
        found.content_range = "yes" if total is not None else "no"
    if len(rows) < 2:
        found.notes.append("fewer than 2 simulations visible: Ids= and Content-Range not probed")
        return
    wanted = [str(rows[0]["Id"]), str(rows[1]["Id"])]
    try:
        answer = await session.request(
            "GET", "Simulations", params={"fields": "Id", IDS_PARAM: ",".join(wanted)}
        )
    except ApiError as exc:
        found.ids_param = "reject" if exc.status == 400 else "unknown"
        return
    got = sorted(str(r.get("Id")) for r in json_list(answer, "Simulations"))
    found.ids_param = "accept" if got == sorted(wanted) else "ignore"


async def _probe_stats(session: Session, found: Capabilities) -> None:
    experiments = await session.experiments.list(
        Query().select(["id"]).orderby("date_created desc").count(1)
    )
    if not experiments:
        found.notes.append("no experiment visible: Stats not probed")
        return
    entity_id = str(experiments[0].id)
    for name, (path, params) in session.experiments.stats_forms(entity_id).items():
        try:
            response = await session.request("GET", path, params=params)
            stats = json_body(response).get("Stats") or {}
        except CompsError:
            continue
        if isinstance(stats, dict) and entity_id in stats:
            found.stats_forms.append(name)


async def _probe_outputs(session: Session, found: Capabilities) -> None:
    sims = await session.simulations.list(
        Query().select(["id"]).where(["state=Succeeded"]).orderby("date_created desc").count(1)
    )
    if not sims:
        found.notes.append("no succeeded simulation visible: outputs not probed")
        return
    listing = await session.outputs.info(sims[0])
    files = [m for m in listing.values() if (m.length or 0) > 1 and m.url]
    if not listing:
        return
    sample = next(iter(listing.values()))
    found.listing_md5 = _md5_form(sample.md5)
    if files:
        async with session.stream("GET", files[0].url or "", headers={"Range": "bytes=0-0"}) as r:
            found.range_requests = "yes" if r.status_code == 206 else "no"


def _md5_form(value: str | None) -> ListingMd5:
    if not value:
        return "none"
    if md5_hex(value) is None:
        return "unreadable"
    text = value.strip()
    if len(text) == 36 and text.count("-") == 4:
        return "uuid"
    return "hex" if len(text) == 32 else "base64"


async def _probe_upload_check(session: Session, found: Capabilities) -> None:
    try:
        await session.request("GET", f"upload/check/{uuid.uuid4()}")
    except ApiError as exc:
        found.upload_check_404 = "yes" if exc.status == 404 else "no"
        return
    found.upload_check_404 = "no"


async def _probe_writes(session: Session, found: Capabilities) -> None:
    marker = uuid.uuid4().hex
    suite = Suite(name=f"comps-async doctor {marker[:8]}", description="kept?")
    suite.tags = {"comps_async.doctor": marker}
    await session.suites.create(suite)
    try:
        exact = await session.suites.list(Query().where_tag([f"comps_async.doctor={marker}"]))
        found.tag_filter_exact = "yes" if [s.id for s in exact] == [suite.id] else "no"
        upper = await session.suites.list(
            Query().where_tag([f"comps_async.doctor={marker.upper()}"])
        )
        found.tag_filter_case_insensitive = "yes" if upper else "no"
        await session.request(
            "POST", "Suites", json={"Suites": [{"Id": str(suite.id), "Name": suite.name}]}
        )
        again = await session.suites.get(suite.id or "")
        found.partial_update_keeps_fields = "yes" if again.description == "kept?" else "no"
    except (CompsError, ValueError) as exc:
        found.notes.append(f"write probe stopped: {exc}")
    finally:
        try:
            await session.suites.delete(suite, expire_now=True)
        except CompsError as exc:
            found.notes.append(f"could not delete the probe suite {suite.id}: {exc}")


def describe(found: Capabilities) -> list[tuple[str, str, str]]:
    """(probe, answer, what the SDK does with it) rows for a report."""
    stats = ", ".join(found.stats_forms) or "none"
    return [
        ("token kind", found.token_kind, "System tokens are never renewed"),
        ("Stats forms", stats, "the first that answers is used; none: wait counts by listing"),
        ("Ids=a,b,c lists", found.ids_param, "ignore/reject: one GET per id"),
        ("Content-Range on lists", found.content_range, "no: page until a short page"),
        ("MD5 in output listings", found.listing_md5, "unreadable/none: length checked only"),
        ("Range on outputs", found.range_requests, "no: big files come as one stream"),
        ("/upload/check unknown -> 404", found.upload_check_404, "anything but 200 uploads"),
        ("tag filter k=v exact", found.tag_filter_exact, "exactly-once look-ups rely on it"),
        ("tag filter case-insensitive", found.tag_filter_case_insensitive, "keys compared so"),
        ("partial update keeps fields", found.partial_update_keeps_fields, "updates send less"),
        ("shared multipart parts", found.shared_parts, "no: one part per file, as pyCOMPS"),
    ]
