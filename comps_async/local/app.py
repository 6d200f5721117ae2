"""The Starlette app of the local COMPS server: every route of protocol §15.

Routes and query-parameter names match case-insensitively (§1.3). Handlers translate the store's
BadRequest / NotFound / Conflict into the COMPS error body ``{"ResponseMessage", "CorrelationId"}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import mimetypes
import re
import uuid
import zipfile
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..concurrency import first_error
from .auth import DEFAULT_ENVIRONMENT, DEFAULT_GROUP, TokenError, User, UserDirectory
from .blobs import BlobStore, Md5MismatchError, RangeWriter, UploadRangeError
from .dashboard import ACTIVE_STATES, PAGE, History, snapshot
from .faults import FaultConfig, FaultInjector
from .multipart import Part, iter_parts
from .store import (
    ACTIVE_SIM_STATES,
    ACTIVE_WI_STATES,
    BY_PLURAL,
    KINDS,
    BadRequest,
    Conflict,
    EntityKind,
    NotFound,
    Store,
    now_wire,
    parse_uuid,
)

__all__ = ["LocalApp", "ServerLimits"]

logger = logging.getLogger(__name__)

_OUTPUT_NAMESPACE = uuid.UUID("6f1c8a52-5a55-4bd0-9d8c-3a4fc0a0c0de")
_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+)$")
_COMMISSIONABLE = {"Suite", "Experiment", "Simulation", "WorkItem"}
# File parts of one save request being verified and stored at once; the parser waits beyond
# that, so a request holds at most this many parts in memory.
_PARTS_STORED_AT_ONCE = 4
# An upload chunk's body is written to disk in blocks of this size, each while the next arrives.
_RECEIVE_BLOCK = 4 << 20


@dataclass(frozen=True)
class ServerLimits:
    """Request-size caps (§8.1, §8.3); a larger request is answered 413."""

    max_batch_bytes: int = 38912 * 1024
    max_asset_collection_bytes: int = 407552 * 1024
    max_form_parts: int = 100_000
    # Whether /upload accepts chunks out of order (unknown for real COMPS, §8.4): off, like a
    # server that only knows in-order uploads; on, to exercise UploadSettings(parallel_chunks).
    accept_out_of_order_chunks: bool = False


@dataclass(frozen=True)
class Compat:
    """How this server answers where real COMPS may differ (every point PROTOCOL.md lists as
    inferred). The defaults are the most plausible reading; each switch plays another answer,
    so the SDK's integration tests can run against all of them."""

    content_range: bool = True  # False: lists never say Content-Range, even when partial
    honour_range: bool = True  # False: a ranged GET of a file gets the whole file, 200
    ids_param: Literal["accept", "ignore", "reject"] = "accept"  # ServiceStack's Ids=a,b,c
    stats_forms: frozenset[str] = frozenset({"path", "query"})  # /{id}/Stats, ?Id=&stats...
    listing_md5: Literal["hex", "base64", "none"] = "hex"  # the MD5 of output listings
    # False: parts are matched to files by position, as if each file sent with content needs a
    # part of its own (pyCOMPS's layout); content attached once for several files is refused.
    shared_parts: bool = True


class _Route(Route):
    """A Starlette route whose literal parts match case-insensitively (§1.3)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.path_regex = re.compile(self.path_regex.pattern, re.IGNORECASE)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    body = {"ResponseMessage": message, "CorrelationId": str(uuid.uuid4()), **extra}
    return JSONResponse(body, status_code=status)


def _params(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.query_params.items()}


def _csv(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes")


def _kind(plural: str) -> EntityKind:
    kind = BY_PLURAL.get(plural.lower())
    if kind is None:
        raise NotFound(f"unknown entity type {plural!r}")
    return kind


def _safe_name(name: Any, what: str = "FileName") -> str:
    if not isinstance(name, str) or not name.strip() or name in (".", ".."):
        raise BadRequest(f"{what} must be a non-empty base name")
    if "/" in name or "\\" in name or "\x00" in name:
        raise BadRequest(f"{what} {name!r} must not contain a path")
    return name


def _safe_relative(path: Any) -> str:
    if path in (None, ""):
        return ""
    text = str(path).replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or ".." in parts:
        raise BadRequest(f"RelativePath {path!r} must stay inside the collection")
    if "\x00" in text:  # no file system can hold it: every simulation using it would fail
        raise BadRequest(f"RelativePath {path!r} contains a NUL character")
    return "/".join(p for p in parts if p not in ("", "."))


def output_file_id(job_id: str, path: str) -> str:
    """Stable id of an output file (used by zip requests)."""
    return str(uuid.uuid5(_OUTPUT_NAMESPACE, f"{job_id}/{path}"))


def _output_files(root: Path) -> list[tuple[str, Path]]:
    """Blocking: the outputs of a working directory, ``(relative path, path)``: regular files
    reached without a link and resolving inside it (links to assets, or planted by a model to
    point elsewhere, are not outputs)."""
    inside = root.resolve()
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(inside):
            continue
        files.append((path.relative_to(root).as_posix(), path))
    return files


def _inside(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise BadRequest("path leaves the working directory")
    return target


def _check_one_part_per_file(items: list[Any], parts: Counter[str]) -> None:
    """``Compat(shared_parts=False)``: every file entry whose content came in this request needs
    a part of its own."""
    used: Counter[str] = Counter()
    for item in items:
        files = (item.get("Files") or item.get("Assets") or []) if isinstance(item, dict) else []
        for entry in files:
            try:
                md5 = str(uuid.UUID(str(entry.get("MD5Checksum"))))
            except (AttributeError, ValueError):
                continue  # the save itself reports a malformed entry
            if md5 in parts:
                used[md5] += 1
    short = sorted(md5 for md5, n in used.items() if n > parts[md5])
    if short:
        raise BadRequest(
            f"file parts are matched by position: {short[0]} is used by {used[short[0]]} files "
            f"but attached {parts[short[0]]} time(s)"
        )


@dataclass
class LocalApp:
    """Owns the store, blobs and users of one data dir and builds the Starlette app."""

    data_dir: Path
    store: Store
    blobs: BlobStore
    users: UserDirectory
    limits: ServerLimits = field(default_factory=ServerLimits)
    compat: Compat = field(default_factory=Compat)
    on_commission: Callable[[], None] = lambda: None
    faults: FaultInjector | None = None
    history: History | None = None  # the dashboard's past (sampled by LocalComps)
    # Sqlite is serialised by the store's lock anyway; a limiter keeps worker threads few. It is
    # created on first use, inside the server's own event loop.
    _db: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)
    # Blob hashing and writing gets threads of its own, so that sqlite work is never queued
    # behind a large upload.
    _blob_io: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)

    async def db(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking store work off the event loop."""
        if self._db is None:
            self._db = anyio.CapacityLimiter(4)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._db)

    async def blob_io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking blob-store work (hashing, writing) off the event loop."""
        if self._blob_io is None:
            self._blob_io = anyio.CapacityLimiter(8)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._blob_io)

    def build(self) -> Starlette:
        """The ASGI app."""
        a = self._endpoint
        routes = [
            _Route("/api/tokens", a(self.login, auth=False), methods=["POST"]),
            _Route("/api/tokens", a(self.renew, auth=False), methods=["PUT"]),
            _Route("/api/environments", a(self.environments), methods=["GET"]),
            _Route("/api/environments/{name}", a(self.environment), methods=["GET"]),
            _Route("/api/users", a(self.list_users), methods=["GET"]),
            _Route("/dashboard", a(self.dashboard_page, auth=False), methods=["GET"]),
            _Route("/dashboard/data", a(self.dashboard_data), methods=["GET"]),
            _Route("/api/Metrics/Queue", a(self.metrics_queue), methods=["GET"]),
            _Route("/api/_local/faults", a(self.set_faults), methods=["PUT"]),
            _Route("/api/_local/counters", a(self.counters), methods=["GET"]),
            _Route("/api/upload/check/{md5}", a(self.upload_check), methods=["GET"]),
            _Route("/api/upload/{md5}", a(self.upload_chunk), methods=["POST"]),
            _Route("/api/ZipAssets", a(self.zip_assets), methods=["POST"]),
            _Route(
                "/api/WorkItems/RelatedEntityId/{id}/Type/{type}", a(self.parents), methods=["GET"]
            ),
            _Route(
                "/api/WorkItems/RelatedEntityId/{id}/Type/{type}/Relation/{relation}",
                a(self.parents),
                methods=["GET"],
            ),
            _Route("/api/WorkItems/{id}/Related", a(self.related), methods=["GET"]),
            _Route(
                "/api/WorkItems/{id}/Related/{relation}/{type}/{related_id}",
                a(self.add_related),
                methods=["POST"],
            ),
            _Route("/api/{plural}", a(self.list_entities), methods=["GET"]),
            _Route("/api/{plural}", a(self.save_entities), methods=["POST"]),
            _Route("/api/{plural}/{id}", a(self.get_entity), methods=["GET"]),
            _Route("/api/{plural}/{id}", a(self.delete_entity), methods=["DELETE"]),
            _Route("/api/{plural}/{id}/tags", a(self.tags), methods=["POST"]),
            _Route("/api/{plural}/{id}/State/{state}", a(self.change_state), methods=["PUT"]),
            _Route("/api/{plural}/{id}/Stats", a(self.stats), methods=["GET"]),
            _Route("/asset/{plural}/{id}/Output", a(self.list_outputs), methods=["GET"]),
            _Route("/asset/{plural}/{id}/Output", a(self.zip_outputs), methods=["POST"]),
            _Route(
                "/asset/download/{owner}/{path:path}",
                a(self.download_output),
                methods=["GET", "HEAD"],
            ),
            _Route("/asset/blobs/{md5}/{name}", a(self.download_blob), methods=["GET", "HEAD"]),
            _Route("/asset/zips/{name}", a(self.download_zip), methods=["GET", "HEAD"]),
        ]
        return Starlette(routes=routes)

    def _endpoint(
        self, handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                if auth:
                    request.state.user = self._authenticate(request)
                return await handler(request)
            except TokenError as exc:
                return _error(401, str(exc))
            except BadRequest as exc:
                return _error(400, str(exc), **exc.details)
            except (Md5MismatchError, UploadRangeError) as exc:
                return _error(400, str(exc))
            except NotFound as exc:
                return _error(404, str(exc))
            except Conflict as exc:
                return _error(409, str(exc))
            except json.JSONDecodeError as exc:
                return _error(400, f"malformed JSON body: {exc}")

        return run

    def _authenticate(self, request: Request) -> User:
        token = request.headers.get("x-comps-token")
        if not token:
            raise TokenError("missing X-COMPS-Token header; log in with POST /api/tokens")
        return self.users.verify(token)

    # --- auth, environments, users (§2) ------------------------------------------------------

    async def login(self, request: Request) -> Response:
        body = await _json(request)
        username = body.get("Username") or body.get("UserName")
        try:
            password = base64.b64decode(str(body.get("Password", "")), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest("Password must be base64 of the UTF-8 password") from None
        user = self.users.check_password(str(username), password) if username else None
        if user is None:
            return _error(401, "Bad username/password")
        return self._token_response(user)

    async def renew(self, request: Request) -> Response:
        return self._token_response(self._authenticate(request))

    def _token_response(self, user: User) -> Response:
        token = self.users.mint(user)
        body = {
            "Token": token,
            "RequestingToken": {
                "UserName": user.username,
                "Groups": list(user.groups),
                "Environments": list(user.environments),
                "Roles": [],
                "Applications": [],
            },
        }
        return JSONResponse(body, headers={"X-COMPS-Token": token})

    async def environments(self, request: Request) -> Response:
        user: User = request.state.user
        return JSONResponse({"Environments": [{"EnvironmentName": e} for e in user.environments]})

    async def environment(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name.lower() != DEFAULT_ENVIRONMENT.lower():
            raise NotFound(f"no environment {name!r}")
        work = str(self.data_dir / "work")
        return JSONResponse(
            {
                "Environments": [
                    {
                        "EnvironmentName": DEFAULT_ENVIRONMENT,
                        "GroupName": DEFAULT_GROUP,
                        "Macros": {
                            "COMPS_PATH(USER)": work,
                            "DOCKER_MOUNTS": f"COMPS_DATA;{work};;{work}",
                        },
                    }
                ]
            }
        )

    async def list_users(self, request: Request) -> Response:
        user: User = request.state.user
        return JSONResponse({"Users": [{"UserName": user.username, "Groups": list(user.groups)}]})

    # --- dashboard -----------------------------------------------------------------------------

    async def dashboard_page(self, request: Request) -> Response:
        # The page itself holds no data; it fetches /dashboard/data with the token given in
        # its URL (?token=...), which requires authentication like every other route.
        return HTMLResponse(PAGE)

    async def dashboard_data(self, request: Request) -> Response:
        user: User = request.state.user
        history = list(self.history.samples) if self.history is not None else []
        now = await self.db(snapshot, self.store)
        return JSONResponse({"user": user.username, "now": now, "history": history})

    async def metrics_queue(self, request: Request) -> Response:
        """``GET /api/Metrics/Queue?EnvironmentName=`` (the COMPS dashboard's QueueView, §12):
        experiments with simulations waiting or running, in buckets by priority name."""
        environment = _params(request).get("environmentname") or DEFAULT_ENVIRONMENT
        if environment.lower() != DEFAULT_ENVIRONMENT.lower():
            raise NotFound(f"no environment {environment!r}")
        state: dict[str, list[dict[str, Any]]] = {}
        for bucket in await self.db(self.store.queue, ACTIVE_STATES):
            state.setdefault(str(bucket.pop("Priority")), []).append(bucket)
        return JSONResponse({"QueueState": state})

    # --- local-only knobs: fault injection and counters for tests and benchmarks -------------

    async def set_faults(self, request: Request) -> Response:
        if self.faults is None:
            raise NotFound("fault injection is not enabled on this server")
        body = await _json(request)
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
            {"Counters": dict(self.faults.counters), "Injected": dict(self.faults.injected)}
        )

    # --- entity reads (§5, §6) ---------------------------------------------------------------

    async def list_entities(self, request: Request) -> Response:
        kind = _kind(request.path_params["plural"])
        return await self._query(request, kind, None)

    async def get_entity(self, request: Request) -> Response:
        kind = _kind(request.path_params["plural"])
        entity_id = parse_uuid(request.path_params["id"])
        return await self._query(request, kind, [entity_id])

    async def _query(self, request: Request, kind: EntityKind, ids: list[str] | None) -> Response:
        p = _params(request)
        if ids is None and p.get("ids"):  # many by id in one call (ServiceStack ``Ids=a,b``)
            if self.compat.ids_param == "reject":
                raise BadRequest("unknown query parameter 'Ids'")
            if self.compat.ids_param == "accept":
                ids = [parse_uuid(i) for i in _csv(p["ids"])]
        offset, count = _int(p.get("offset"), "offset"), _int(p.get("count"), "count")
        filters = _csv(p.get("filters"))
        if "id" in p:  # web-UI style ?Id=<id> (§5)
            filters.append(f"Id={p['id']}")
        rows, total = await self.db(
            lambda: self.store.find(
                kind,
                ids=ids,
                filters=filters,
                tag_filters=_csv(p.get("tagfilters")),
                orderby=p.get("orderby"),
                offset=offset,
                count=count or None,
            )
        )
        if ids is not None and len(ids) == 1 and not rows and "ids" not in p:
            raise NotFound(f"no {kind.name} with id {ids[0]}")
        fields = _csv(p.get("fields"))
        children = _csv(p.get("children"))
        for child in children:
            if child.lower() not in {c.lower() for c in kind.children}:
                raise BadRequest(f"{kind.name} has no child {child!r}")
        entities = await self.db(
            self._render,
            kind,
            rows,
            fields,
            children,
            str(request.base_url),
            _truthy(p.get("coalesceconfig")),
        )
        headers = {}
        if len(rows) < total and self.compat.content_range:
            last = offset + len(rows) - 1
            headers["Content-Range"] = f"items {offset}-{max(last, offset)}/{total}"
        body: dict[str, Any] = {kind.plural: entities}
        ops = _csv(p.get("statsoperations"))
        if ops and kind.name in ("Experiment", "Suite") and "query" in self.compat.stats_forms:
            body["Stats"] = {e["Id"]: await self._stats(kind, e["Id"], ops) for e in entities}
        return JSONResponse(body, headers=headers)

    def _render(
        self,
        kind: EntityKind,
        rows: list[Any],
        fields: list[str],
        children: list[str],
        base_url: str,
        coalesce: bool,
    ) -> list[dict[str, Any]]:
        wanted = {c for c in kind.children if c.lower() in {x.lower() for x in children}}
        kids = self.store.children([r["id"] for r in rows], wanted)
        basic_keys = list(kind.basic)
        if fields:
            lookup = {k.lower(): k for k in kind.basic}
            unknown = [f for f in fields if f.lower() not in lookup]
            if unknown:
                raise BadRequest(f"{kind.name} has no field(s) {', '.join(unknown)}")
            basic_keys = [lookup[f.lower()] for f in fields]
        out = []
        for row in rows:
            full = self._basic(kind, row)
            entity = {k: full.get(k) for k in basic_keys}
            extra = kids[row["id"]]
            if "Tags" in wanted:
                entity["Tags"] = extra.get("Tags", {})
            if "Configuration" in wanted:
                entity["Configuration"] = (
                    self.effective_configuration(kind, row)
                    if coalesce
                    else json.loads(row["configuration"] or "null")
                )
            for files_key in wanted & {"Files", "Assets"}:
                entity[files_key] = [
                    f | {"Uri": f"{base_url}asset/blobs/{f['MD5Checksum']}/{quote(f['FileName'])}"}
                    for f in extra.get("_files", [])
                ]
            if "HPCJobs" in wanted:
                entity["HPCJobs"] = extra.get("HPCJobs", [])
            if "Plugins" in wanted:
                entity["Plugins"] = []
            out.append(entity)
        return out

    @staticmethod
    def _basic(kind: EntityKind, row: Any) -> dict[str, Any]:
        full: dict[str, Any] = json.loads(row["doc"])
        full.update(
            {
                "Id": row["id"],
                "Name": row["name"],
                "Owner": row["owner"],
                "DateCreated": row["date_created"],
                "LastModified": row["last_modified"],
            }
        )
        if kind.parent_key:
            full[kind.parent_key] = row["parent_id"]
        if kind.state_key:
            full[kind.state_key] = row["state"]
        return full

    def effective_configuration(self, kind: EntityKind, row: Any) -> dict[str, Any] | None:
        """Configuration merged Suite -> Experiment -> Simulation (``coalesceconfig``)."""
        chain = [json.loads(row["configuration"] or "{}")]
        parent, parent_kind = row["parent_id"], kind.name
        while parent and parent_kind in ("Simulation", "Experiment"):
            up = self.store.query(
                "SELECT parent_id, configuration FROM entities WHERE id = ?", (parent,)
            )
            if not up:
                break
            chain.append(json.loads(up[0]["configuration"] or "{}"))
            parent = up[0]["parent_id"]
            parent_kind = "Experiment" if parent_kind == "Simulation" else "Suite"
        merged: dict[str, Any] = {}
        for level in reversed(chain):
            merged.update({k: v for k, v in level.items() if v is not None})
        return merged or None

    async def stats(self, request: Request) -> Response:
        if "path" not in self.compat.stats_forms:
            raise NotFound("no such route")
        kind = _kind(request.path_params["plural"])
        entity_id = parse_uuid(request.path_params["id"])
        ops = _csv(_params(request).get("statsoperations")) or [
            "simulationcount",
            "simulationstatecount",
        ]
        return JSONResponse({"Stats": {entity_id: await self._stats(kind, entity_id, ops)}})

    async def _stats(self, kind: EntityKind, entity_id: str, ops: list[str]) -> dict[str, Any]:
        counts: dict[str, int] = await self.db(self.store.state_counts, kind, entity_id)
        out: dict[str, Any] = {}
        lowered = {o.lower() for o in ops}
        if "simulationcount" in lowered:
            out["SimulationCount"] = sum(counts.values())
        if "simulationstatecount" in lowered:
            out["SimulationStateCount"] = counts
        if "simulationusage" in lowered and kind.name == "Experiment":
            jobs = await self.db(self.store.job_usage, entity_id)
            cores = [j.cores for j in jobs]
            out["SimulationUsage"] = {
                "MaxCores": max(cores, default=0),
                "MinCores": min(cores, default=0),
                "TotalCoreTimeUsage": sum(j.cores * j.seconds for j in jobs),  # core seconds
                "TotalDiskUsage": sum(j.output_bytes for j in jobs),
            }
        return out

    # --- saves (§8) ----------------------------------------------------------------------------

    async def save_entities(self, request: Request) -> Response:
        kind = _kind(request.path_params["plural"])
        user: User = request.state.user
        if kind.name in ("Suite", "Experiment"):
            body = await _json(request)
            items = body.get(kind.plural)
            if not isinstance(items, list):
                raise BadRequest(f'body must be {{"{kind.plural}": [...]}}')
            ids = await self.db(self._save_json, kind, items, user.username)
            return JSONResponse({"Ids": ids})
        limit = (
            self.limits.max_asset_collection_bytes
            if kind.name == "AssetCollection"
            else self.limits.max_batch_bytes
        )
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit:
            return _error(
                413,
                f"request of {declared} bytes exceeds the {limit}-byte limit; send smaller batches",
            )
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadRequest(f"{kind.plural} are saved as multipart/form-data (§8.1)")
        items, parts = await self._receive_multipart(request)
        if not self.compat.shared_parts:
            _check_one_part_per_file(items, parts)
        ids = await self.db(self._save_multipart, kind, items, user.username)
        return JSONResponse({"Ids": ids})

    async def _receive_multipart(self, request: Request) -> tuple[list[Any], Counter[str]]:
        """The entity array of a multipart save and how many parts each md5 had, once every
        file part has been verified and stored (each while the rest of the body arrives)."""
        items: Any = None
        parts: Counter[str] = Counter()
        stores = anyio.Semaphore(_PARTS_STORED_AT_ONCE)
        try:
            async with anyio.create_task_group() as tg:
                async for part in iter_parts(request, self.limits.max_form_parts):
                    if part.name == "not_a_file":
                        items = json.loads(part.content() or b"[]")
                        continue
                    if part.filename is None:
                        raise BadRequest(f"part {part.name!r} must be a file part named by its md5")
                    md5 = uuid.UUID(parse_uuid(part.name, "part name (md5)"))
                    parts[str(md5)] += 1
                    await stores.acquire()  # bounds the parts held in memory
                    tg.start_soon(self._store_part, md5, part, stores)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        if items is None:
            raise BadRequest(
                "multipart body needs a part named 'not_a_file' with the JSON array of entities"
            )
        if not isinstance(items, list):
            raise BadRequest("the 'not_a_file' part must hold a JSON array")
        return items, parts

    async def _store_part(self, md5: uuid.UUID, part: Part, stores: anyio.Semaphore) -> None:
        """Verify and store one file part (in a worker thread) while the body still arrives."""
        try:
            await self.blob_io(self.blobs.put, md5, part.pieces)
        finally:
            part.pieces.clear()
            stores.release()

    def _save_json(self, kind: EntityKind, items: list[Any], owner: str) -> list[str]:
        def tx(conn: Any) -> list[str]:
            ids = []
            for item in items:
                if not isinstance(item, dict):
                    raise BadRequest(f"each {kind.name} must be a JSON object")
                parent = item.get(kind.parent_key) if kind.parent_key else None
                if parent:
                    parent = parse_uuid(parent, kind.parent_key or "")
                    self.store.get(KINDS["Suite"], parent)
                config = _config(item.get("Configuration"))
                doc = {"Description": item.get("Description")}
                if item.get("Id"):
                    entity_id = parse_uuid(item["Id"])
                    row = self.store.get(kind, entity_id)
                    doc = _merged(json.loads(row["doc"]), _sent(item, "Description"))
                    sets = ["doc = ?", "last_modified = ?", "name = COALESCE(?, name)"]
                    args: list[Any] = [json.dumps(doc), now_wire(), item.get("Name")]
                    if config is not None:
                        sets.append("configuration = ?")
                        args.append(json.dumps(_merged(_stored_config(row), config)))
                    if parent:
                        sets.append("parent_id = ?")
                        args.append(parent)
                    conn.execute(
                        f"UPDATE entities SET {', '.join(sets)} WHERE id = ?", [*args, entity_id]
                    )
                    ids.append(entity_id)
                    continue
                name = item.get("Name")
                if not isinstance(name, str) or not name.strip():
                    raise BadRequest(f"a new {kind.name} needs a Name")
                ids.append(
                    Store.insert_entity(
                        conn,
                        kind,
                        parent_id=parent,
                        name=name,
                        owner=owner,
                        state=None,
                        doc=doc,
                        configuration=config,
                        tags=_tags(item.get("Tags")),
                    )
                )
            return ids

        return self.store.run(tx)

    def _save_multipart(self, kind: EntityKind, items: list[Any], owner: str) -> list[str]:
        files_key = "Assets" if kind.name == "AssetCollection" else "Files"
        prepared = []
        untracked: list[str] = []
        for item in items:
            if not isinstance(item, dict):
                raise BadRequest(f"each {kind.name} must be a JSON object")
            files = []
            for entry in item.get(files_key) or []:
                if not isinstance(entry, dict):
                    raise BadRequest(f"each {files_key} entry must be a JSON object")
                name = _safe_name(entry.get("FileName"))
                md5 = parse_uuid(str(entry.get("MD5Checksum")), "MD5Checksum")
                doc: dict[str, Any] = {"FileName": name, "MD5Checksum": md5}
                if kind.name == "AssetCollection":
                    doc["RelativePath"] = _safe_relative(entry.get("RelativePath"))
                    doc["Tags"] = entry.get("Tags")
                else:
                    doc["FileType"] = entry.get("FileType")
                    doc["Description"] = entry.get("Description", "")
                if not self.blobs.exists(uuid.UUID(md5)):
                    untracked.append(md5)
                    continue
                files.append((md5, self.blobs.size(uuid.UUID(md5)), doc))
            prepared.append((item, files))
        if untracked:  # atomic: nothing is created when any content is missing (§8.1)
            unique = sorted(set(untracked))
            raise BadRequest(
                f"{len(unique)} file(s) referenced by MD5Checksum are not on the "
                "server; attach or upload them",
                UntrackedIds=unique,
            )

        def tx(conn: Any) -> list[str]:
            ids = []
            for item, files in prepared:
                if item.get("Id"):
                    ids.append(self._update_multipart(conn, kind, item, files))
                    continue
                ids.append(self._create_multipart(conn, kind, item, files, owner))
            return ids

        return self.store.run(tx)

    def _create_multipart(
        self, conn: Any, kind: EntityKind, item: dict[str, Any], files: list[Any], owner: str
    ) -> str:
        tags = _tags(item.get("Tags"))
        if kind.name == "AssetCollection":
            return Store.insert_entity(
                conn,
                kind,
                parent_id=None,
                name=None,
                owner=owner,
                state=None,
                doc={},
                configuration=None,
                tags=tags,
                files=files,
            )
        name = item.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise BadRequest(f"a new {kind.name} needs a Name")
        if kind.name == "Simulation":
            experiment = parse_uuid(item.get("ExperimentId") or "", "ExperimentId")
            self.store.get(KINDS["Experiment"], experiment)
            return Store.insert_entity(
                conn,
                kind,
                parent_id=experiment,
                name=name,
                owner=owner,
                state="Created",
                doc={"Description": item.get("Description"), "ErrorMessage": None},
                configuration=_config(item.get("Configuration")),
                tags=tags,
                files=files,
            )
        worker = item.get("Worker")
        if not isinstance(worker, dict):
            raise BadRequest("a new WorkItem needs a Worker with name and version")
        lowered = {k.lower(): v for k, v in worker.items()}  # either casing (§6.4)
        if not lowered.get("name") or not lowered.get("version"):
            raise BadRequest("a new WorkItem needs a Worker with name and version")
        if not item.get("EnvironmentName"):
            raise BadRequest("a new WorkItem needs an EnvironmentName")
        doc = {
            "Worker": {"Name": lowered["name"], "Version": lowered["version"]},
            "EnvironmentName": item["EnvironmentName"],
            "Description": item.get("Description"),
            "Priority": item.get("Priority") or "Normal",
            "AssetCollectionId": item.get("AssetCollectionId"),
        }
        return Store.insert_entity(
            conn,
            kind,
            parent_id=None,
            name=name,
            owner=owner,
            state="Created",
            doc=doc,
            configuration=None,
            tags=tags,
            files=files,
        )

    def _update_multipart(
        self, conn: Any, kind: EntityKind, item: dict[str, Any], files: list[Any]
    ) -> str:
        if kind.name == "AssetCollection":
            raise BadRequest("asset collections are immutable once saved (tags aside)")
        entity_id = parse_uuid(item["Id"])
        row = self.store.get(kind, entity_id)
        doc = _merged(json.loads(row["doc"]), _sent(item, "Description"))
        config = _config(item.get("Configuration"))
        conn.execute(
            "UPDATE entities SET name = COALESCE(?, name), doc = ?, last_modified = ?, "
            "configuration = COALESCE(?, configuration) WHERE id = ?",
            (
                item.get("Name"),
                json.dumps(doc),
                now_wire(),
                json.dumps(_merged(_stored_config(row), config)) if config else None,
                entity_id,
            ),
        )
        Store.add_files(conn, entity_id, files)
        return entity_id

    # --- tags, state, delete (§9) ------------------------------------------------------------

    async def tags(self, request: Request) -> Response:
        kind = _kind(request.path_params["plural"])
        entity_id = parse_uuid(request.path_params["id"])
        body = await _json(request)
        mode = str(body.get("OperationMode", "Merge"))
        if mode not in ("Merge", "Replace", "Delete"):
            raise BadRequest("OperationMode must be Merge, Replace or Delete")
        tags = _tags(body.get("Tags"))

        def tx(conn: Any) -> None:
            self.store.get(kind, entity_id)
            Store.write_tags(conn, entity_id, tags, mode)

        await self.db(self.store.run, tx)
        return JSONResponse({})

    async def change_state(self, request: Request) -> Response:
        kind = _kind(request.path_params["plural"])
        entity_id = parse_uuid(request.path_params["id"])
        target = request.path_params["state"].lower()
        if kind.name not in _COMMISSIONABLE:
            raise BadRequest(f"{kind.plural} have no state")
        if target not in ("commissionrequested", "cancelrequested"):
            raise BadRequest("state must be CommissionRequested or CancelRequested")
        commission = target == "commissionrequested"
        changed = await self.db(
            self.store.run, lambda conn: self._change_state(conn, kind, entity_id, commission)
        )
        if changed:
            self.on_commission()
        return JSONResponse({})

    def _change_state(self, conn: Any, kind: EntityKind, entity_id: str, commission: bool) -> int:
        row = self.store.get(kind, entity_id)
        active: tuple[str, ...]
        if kind.name == "WorkItem":
            state = row["state"]
            active = ACTIVE_WI_STATES
        else:
            state = row["state"] if kind.name == "Simulation" else None
            active = ACTIVE_SIM_STATES
        if state is not None:  # a single simulation or work item
            if commission and state != "Created":
                if state in active:
                    return 0  # already on its way: commissioning is idempotent
                raise Conflict(
                    f"{kind.name} {entity_id} is {state}; only Created can be commissioned"
                )
            if not commission and state not in active:
                if state in ("CancelRequested", "Canceled"):
                    return 0
                raise Conflict(f"{kind.name} {entity_id} is {state}; it is not running")
            new = "CommissionRequested" if commission else "CancelRequested"
            return int(
                conn.execute(
                    "UPDATE entities SET state = ?, last_modified = ? WHERE id = ?",
                    (new, now_wire(), entity_id),
                ).rowcount
            )
        scope = (
            "parent_id = ?"
            if kind.name == "Experiment"
            else "parent_id IN (SELECT id FROM entities WHERE kind = 'Experiment' AND "
            "parent_id = ? AND deleted = 0)"
        )
        if commission:
            sql = (
                f"UPDATE entities SET state = 'CommissionRequested', last_modified = ? "
                f"WHERE kind = 'Simulation' AND deleted = 0 AND state = 'Created' AND {scope}"
            )
        else:
            marks = ",".join(f"'{s}'" for s in ACTIVE_SIM_STATES)
            sql = (
                f"UPDATE entities SET state = 'CancelRequested', last_modified = ? "
                f"WHERE kind = 'Simulation' AND deleted = 0 AND state IN ({marks}) "
                f"AND {scope}"
            )
        return int(conn.execute(sql, (now_wire(), entity_id)).rowcount)

    async def delete_entity(self, request: Request) -> Response:
        kind = _kind(request.path_params["plural"])
        entity_id = parse_uuid(request.path_params["id"])
        expire = int(_truthy(_params(request).get("expirenow")))

        def tx(conn: Any) -> None:
            self.store.get(kind, entity_id)
            ids = [entity_id]
            if kind.name == "Suite":
                ids += [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM entities WHERE parent_id = ? AND kind = 'Experiment'",
                        (entity_id,),
                    )
                ]
            if kind.name in ("Suite", "Experiment"):
                marks = ",".join("?" * len(ids))
                ids += [
                    r[0]
                    for r in conn.execute(
                        f"SELECT id FROM entities WHERE kind = 'Simulation' AND parent_id IN "
                        f"({marks})",
                        ids,
                    )
                ]
            conn.executemany(
                "UPDATE entities SET deleted = 1, expire_now = ?, last_modified = ? WHERE id = ?",
                [(expire, now_wire(), i) for i in ids],
            )
            # A deleted running simulation is canceled so that the runner stops it.
            marks = ",".join(f"'{s}'" for s in ACTIVE_SIM_STATES)
            conn.executemany(
                f"UPDATE entities SET state = 'CancelRequested' WHERE id = ? AND state IN "
                f"({marks})",
                [(i,) for i in ids],
            )

        await self.db(self.store.run, tx)
        self.on_commission()
        return JSONResponse({})

    # --- WorkItem relations (§6.4) -----------------------------------------------------------

    async def add_related(self, request: Request) -> Response:
        p = request.path_params
        work_item = parse_uuid(p["id"])
        relation = _choice(p["relation"], ("DependsOn", "Created"), "RelationType")
        object_type = _choice(p["type"], tuple(KINDS), "ObjectType")
        related = parse_uuid(p["related_id"])

        def tx(conn: Any) -> None:
            self.store.get(KINDS["WorkItem"], work_item)
            self.store.get(KINDS[object_type], related)
            conn.execute(
                "INSERT OR IGNORE INTO relations VALUES (?,?,?,?,?)",
                (work_item, relation, object_type, related, now_wire()),
            )

        await self.db(self.store.run, tx)
        return JSONResponse({})

    async def related(self, request: Request) -> Response:
        work_item = parse_uuid(request.path_params["id"])
        p = _params(request)
        await self.db(self.store.get, KINDS["WorkItem"], work_item)
        sql = (
            "SELECT object_type, related_id, relation, date_created FROM relations "
            "WHERE work_item_id = ?"
        )
        args = [work_item]
        if p.get("relatedobject"):
            sql += " AND object_type = ?"
            args.append(_choice(p["relatedobject"], tuple(KINDS), "RelatedObject"))
        if p.get("relationtype"):
            sql += " AND relation = ?"
            args.append(_choice(p["relationtype"], ("DependsOn", "Created"), "RelationType"))
        rows = await self.db(self.store.query, sql, args)
        return JSONResponse(
            {
                "Related": [
                    {"ObjectType": r[0], "Id": r[1], "RelationType": r[2], "DateCreated": r[3]}
                    for r in rows
                ]
            }
        )

    async def parents(self, request: Request) -> Response:
        p = request.path_params
        related = parse_uuid(p["id"])
        object_type = _choice(p["type"], tuple(KINDS), "Type")
        sql = (
            "SELECT r.work_item_id, r.relation FROM relations r JOIN entities e ON "
            "e.id = r.work_item_id AND e.deleted = 0 WHERE r.related_id = ? AND "
            "r.object_type = ?"
        )
        args = [related, object_type]
        if p.get("relation"):
            sql += " AND r.relation = ?"
            args.append(_choice(p["relation"], ("DependsOn", "Created"), "Relation"))
        rows = await self.db(self.store.query, sql, args)
        return JSONResponse({"Parents": [{"Id": r[0], "RelationType": r[1]} for r in rows]})

    # --- large uploads (§8.4) ----------------------------------------------------------------

    async def upload_check(self, request: Request) -> Response:
        md5 = uuid.UUID(parse_uuid(request.path_params["md5"], "md5"))
        if await self.blob_io(self.blobs.exists, md5):
            return JSONResponse({"Size": await self.blob_io(self.blobs.size, md5)})
        size = await self.blob_io(self.blobs.partial_size, md5)
        if size is None:
            return _error(404, f"no upload of {md5}")
        return JSONResponse({"Size": size}, status_code=206)

    async def upload_chunk(self, request: Request) -> Response:
        md5 = uuid.UUID(parse_uuid(request.path_params["md5"], "md5"))
        match = _RANGE.match(request.headers.get("content-range", "").strip())
        if not match:
            raise BadRequest("Content-Range: bytes <start>-<end>/<total> is required")
        start, end, total = (int(g) for g in match.groups())
        if not start <= end < total:
            raise BadRequest(f"invalid Content-Range {start}-{end}/{total}")
        if await self.blob_io(self.blobs.exists, md5):
            return JSONResponse({"Size": total})  # already complete: re-send is harmless
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) != end - start + 1:
            raise BadRequest("chunk length does not match its Content-Range")
        writer = await self.blob_io(
            partial(self.blobs.begin_range, allow_gaps=self.limits.accept_out_of_order_chunks),
            md5,
            start,
            end + 1,
            total,
        )
        try:
            await self._receive_into(writer, request)
            done = await self.blob_io(writer.finish)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.blob_io(writer.abandon)
            raise
        return JSONResponse({"Size": total if done else end + 1})

    async def _receive_into(self, writer: RangeWriter, request: Request) -> None:
        """Stream a chunk's body into ``writer``: each block is written and hashed (in two
        worker threads at once) while the next one arrives."""
        send, receive = anyio.create_memory_object_stream[list[bytes]](1)

        async def write_blocks() -> None:
            async with receive:
                async for block in receive:
                    async with anyio.create_task_group() as both:
                        both.start_soon(self.blob_io, writer.hash, block)
                        await self.blob_io(writer.write, block)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(write_blocks)
                async with send:
                    block: list[bytes] = []
                    size = 0
                    async for piece in request.stream():
                        block.append(piece)
                        size += len(piece)
                        if size >= _RECEIVE_BLOCK:
                            await send.send(block)
                            block, size = [], 0
                    if block:
                        await send.send(block)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    # --- outputs, downloads, zips (§10) ------------------------------------------------------

    def _working_dir(
        self, plural: str, entity_id: str, job_id: str | None
    ) -> tuple[str, Path] | None:
        kind = _kind(plural)
        row = self.store.get(kind, entity_id)
        if kind.name == "WorkItem":
            if job_id:
                raise BadRequest("work items have no HPC jobs")
            wd = json.loads(row["doc"]).get("WorkingDirectory")
            return (entity_id, Path(wd)) if wd else None
        if kind.name != "Simulation":
            raise BadRequest("outputs exist for Simulations and WorkItems")
        if job_id:
            owner, job = self.store.job(parse_uuid(job_id, "hpcjobid"))
            if owner != entity_id:
                raise NotFound(f"HPC job {job_id} does not belong to {entity_id}")
        else:
            job = self.store.latest_job(entity_id)  # type: ignore[assignment]
            if job is None:
                return None
        return job["Id"], Path(job["WorkingDirectory"])

    def _outputs(
        self, plural: str, entity_id: str, job_id: str | None, base_url: str
    ) -> list[dict[str, Any]]:
        found = self._working_dir(plural, entity_id, job_id)
        if found is None or not found[1].is_dir():
            return []
        owner, root = found
        indexed = self.store.output_md5s(owner)
        resources = []
        for rel, path in _output_files(root):
            size = path.stat().st_size
            parent = str(PurePosixPath(rel).parent)
            known = indexed.get(rel)
            resources.append(
                {
                    "Id": output_file_id(owner, rel),
                    "Length": size,
                    "FriendlyName": path.name,
                    "PathFromRoot": parent,
                    "Type": "File",
                    "Url": f"{base_url}asset/download/{owner}/{quote(rel)}",
                    "MimeType": mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                    "MD5": self._listed_md5(known[1]) if known and known[0] == size else None,
                }
            )
        return resources

    def _listed_md5(self, md5_hex: str) -> str | None:
        if self.compat.listing_md5 == "none":
            return None
        if self.compat.listing_md5 == "base64":
            return base64.b64encode(bytes.fromhex(md5_hex.replace("-", ""))).decode()
        return md5_hex

    async def list_outputs(self, request: Request) -> Response:
        p = request.path_params
        resources = await self.db(
            self._outputs,
            p["plural"],
            parse_uuid(p["id"]),
            _params(request).get("hpcjobid"),
            str(request.base_url),
        )
        return JSONResponse({"Resources": resources})

    async def zip_outputs(self, request: Request) -> Response:
        p = request.path_params
        if not _truthy(_params(request).get("zip")):
            raise BadRequest("POST to Output needs ?zip=1")
        body = await _json(request)
        wanted = {parse_uuid(i, "Ids entry") for i in body.get("Ids") or []}
        if not wanted:
            raise BadRequest("Ids must list output file ids")
        entity_id = parse_uuid(p["id"])
        found = await self.db(
            self._working_dir, p["plural"], entity_id, _params(request).get("hpcjobid")
        )
        if found is None:
            raise NotFound(f"{entity_id} has no outputs yet")
        owner, root = found
        files = await anyio.to_thread.run_sync(_output_files, root)
        members = [(rel, path) for rel, path in files if output_file_id(owner, rel) in wanted]
        if len(members) != len(wanted):
            raise NotFound("some output ids are unknown")
        return await self._zip_response(request, members)

    async def zip_assets(self, request: Request) -> Response:
        body = await _json(request)
        members = []
        for asset in body.get("Assets") or []:
            name = _safe_relative(str(asset.get("FileNameForAsset", "")))
            md5 = uuid.UUID(parse_uuid(asset.get("MD5"), "MD5"))
            if not name or not self.blobs.exists(md5):
                raise NotFound(f"no asset {asset.get('FileNameForAsset')!r} with md5 {md5}")
            members.append((name, self.blobs.path(md5)))
        if not members:
            raise BadRequest("Assets must list FileNameForAsset and MD5")
        return await self._zip_response(request, members)

    async def _zip_response(self, request: Request, members: list[tuple[str, Path]]) -> Response:
        zips = self.data_dir / "zips"
        zips.mkdir(exist_ok=True)
        name = f"{uuid.uuid4()}.zip"

        def build() -> int:
            tmp = zips / f".{name}"
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                for arcname, path in members:
                    archive.write(path, arcname)
            tmp.rename(zips / name)
            return (zips / name).stat().st_size

        length = await anyio.to_thread.run_sync(build)
        return JSONResponse(
            {
                "Resources": [
                    {
                        "Id": str(uuid.uuid4()),
                        "Length": length,
                        "FriendlyName": name,
                        "PathFromRoot": ".",
                        "Url": f"{request.base_url}asset/zips/{name}",
                        "MimeType": "application/zip",
                        "Type": "File",
                    }
                ]
            }
        )

    async def download_output(self, request: Request) -> Response:
        owner = parse_uuid(request.path_params["owner"])
        rel = request.path_params["path"]

        def locate() -> Path:
            rows = self.store.query("SELECT entity_id, doc FROM hpc_jobs WHERE id = ?", (owner,))
            if rows:
                root = Path(json.loads(rows[0]["doc"])["WorkingDirectory"])
            else:
                root = Path(
                    json.loads(self.store.get(KINDS["WorkItem"], owner)["doc"]).get(
                        "WorkingDirectory"
                    )
                    or "/nonexistent"
                )
            target = _inside(root, rel)
            if not target.is_file():
                raise NotFound(f"no output {rel!r}")
            return target

        return self._file_response(request, await self.db(locate))

    def _file_response(self, request: Request, path: Path) -> Response:
        # Starlette streams the file in chunks and answers Range requests (206/416) itself.
        if not self.compat.honour_range and "range" in request.headers:
            request.scope["headers"] = [
                (k, v) for k, v in request.scope["headers"] if k.lower() != b"range"
            ]
        return FileResponse(
            path, media_type="application/octet-stream", headers={"Accept-Ranges": "bytes"}
        )

    async def download_blob(self, request: Request) -> Response:
        md5 = uuid.UUID(parse_uuid(request.path_params["md5"], "md5"))
        if not await self.blob_io(self.blobs.exists, md5):
            raise NotFound(f"no asset with md5 {md5}")
        return self._file_response(request, self.blobs.path(md5))

    async def download_zip(self, request: Request) -> Response:
        name = _safe_name(request.path_params["name"], "zip name")
        path = self.data_dir / "zips" / name
        if not path.is_file():
            raise NotFound(f"no zip {name}")
        return self._file_response(request, path)


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _int(text: str | None, name: str) -> int:
    if text in (None, ""):
        return 0
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < 0:
        raise BadRequest(f"{name} must not be negative")
    return value


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    for choice in choices:
        if choice.lower() == value.lower():
            return choice
    raise BadRequest(f"{what} must be one of {', '.join(choices)}")


def _tags(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("Tags must be a JSON object")
    return value


def _sent(item: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The keys of ``item`` that an update actually sent."""
    return {k: item[k] for k in keys if k in item}


def _merged(stored: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """An update merges: the keys it sends replace the stored ones, the others stay. idmtools
    updates an experiment with ``{"Configuration": {"AssetCollectionId": ...}}`` alone and
    relies on COMPS keeping ExecutablePath and the rest (issue 20)."""
    return {**stored, **sent}


def _stored_config(row: Any) -> dict[str, Any]:
    return dict(json.loads(row["configuration"])) if row["configuration"] else {}


def _config(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest("Configuration must be a JSON object")
    return value
