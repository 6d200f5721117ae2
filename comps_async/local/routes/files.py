"""Files: large uploads (§8.4), output listings, zips and downloads (§10)."""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import re
import uuid
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from ..blobs import RangeWriter
from ..state import ServerState
from ..store import (
    KINDS,
    BadRequest,
    NotFound,
    parse_uuid,
)
from ..web import (
    error_response,
    first_error,
    json_body,
    kind_of,
    params,
    safe_name,
    safe_relative,
    truthy,
)

__all__ = ["FileRoutes"]

logger = logging.getLogger(__name__)

_OUTPUT_NAMESPACE = uuid.UUID("6f1c8a52-5a55-4bd0-9d8c-3a4fc0a0c0de")
_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+)$")
# An upload chunk's body is written to disk in blocks of this size, each while the next arrives.
_RECEIVE_BLOCK = 4 << 20


@dataclass
class FileRoutes:
    """Content in and out: chunked uploads, outputs of working directories, zips, blobs."""

    state: ServerState

    async def upload_check(self, request: Request) -> Response:
        md5 = uuid.UUID(parse_uuid(request.path_params["md5"], "md5"))
        if await self.state.blob_io(self.state.blobs.exists, md5):
            return JSONResponse({"Size": await self.state.blob_io(self.state.blobs.size, md5)})
        size = await self.state.blob_io(self.state.blobs.partial_size, md5)
        if size is None:
            return error_response(404, f"no upload of {md5}")
        return JSONResponse({"Size": size}, status_code=206)

    async def upload_chunk(self, request: Request) -> Response:
        md5 = uuid.UUID(parse_uuid(request.path_params["md5"], "md5"))
        match = _RANGE.match(request.headers.get("content-range", "").strip())
        if not match:
            raise BadRequest("Content-Range: bytes <start>-<end>/<total> is required")
        start, end, total = (int(g) for g in match.groups())
        if not start <= end < total:
            raise BadRequest(f"invalid Content-Range {start}-{end}/{total}")
        if await self.state.blob_io(self.state.blobs.exists, md5):
            return JSONResponse({"Size": total})  # already complete: re-send is harmless
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) != end - start + 1:
            raise BadRequest("chunk length does not match its Content-Range")
        writer = await self.state.blob_io(
            partial(
                self.state.blobs.begin_range,
                allow_gaps=self.state.compat.out_of_order_chunks,
            ),
            md5,
            start,
            end + 1,
            total,
        )
        try:
            await self._receive_into(writer, request)
            done = await self.state.blob_io(writer.finish)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.state.blob_io(writer.abandon)
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
                        both.start_soon(self.state.blob_io, writer.hash, block)
                        await self.state.blob_io(writer.write, block)

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

    def _working_dir(
        self, plural: str, entity_id: str, job_id: str | None
    ) -> tuple[str, Path] | None:
        kind = kind_of(plural)
        row = self.state.store.get(kind, entity_id)
        if kind.name == "WorkItem":
            if job_id:
                raise BadRequest("work items have no HPC jobs")
            wd = json.loads(row["doc"]).get("WorkingDirectory")
            return (entity_id, Path(wd)) if wd else None
        if kind.name != "Simulation":
            raise BadRequest("outputs exist for Simulations and WorkItems")
        if job_id:
            found = self.state.jobs.find(parse_uuid(job_id, "hpcjobid"))
            if found is None:
                raise NotFound(f"no HPC job {job_id}")
            owner, job = found
            if owner != entity_id:
                raise NotFound(f"HPC job {job_id} does not belong to {entity_id}")
        else:
            job = self.state.jobs.latest(entity_id)  # type: ignore[assignment]
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
        indexed = self.state.jobs.output_md5s(owner)
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
        if self.state.compat.listing_md5 == "none":
            return None
        if self.state.compat.listing_md5 == "base64":
            return base64.b64encode(bytes.fromhex(md5_hex.replace("-", ""))).decode()
        return md5_hex

    async def list_outputs(self, request: Request) -> Response:
        p = request.path_params
        resources = await self.state.db(
            self._outputs,
            p["plural"],
            parse_uuid(p["id"]),
            params(request).get("hpcjobid"),
            str(request.base_url),
        )
        return JSONResponse({"Resources": resources})

    async def zip_outputs(self, request: Request) -> Response:
        p = request.path_params
        if not truthy(params(request).get("zip")):
            raise BadRequest("POST to Output needs ?zip=1")
        body = await json_body(request)
        wanted = {parse_uuid(i, "Ids entry") for i in body.get("Ids") or []}
        if not wanted:
            raise BadRequest("Ids must list output file ids")
        entity_id = parse_uuid(p["id"])
        found = await self.state.db(
            self._working_dir, p["plural"], entity_id, params(request).get("hpcjobid")
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
        body = await json_body(request)
        members = []
        for asset in body.get("Assets") or []:
            name = safe_relative(str(asset.get("FileNameForAsset", "")))
            md5 = uuid.UUID(parse_uuid(asset.get("MD5"), "MD5"))
            if not name or not self.state.blobs.exists(md5):
                raise NotFound(f"no asset {asset.get('FileNameForAsset')!r} with md5 {md5}")
            members.append((name, self.state.blobs.path(md5)))
        if not members:
            raise BadRequest("Assets must list FileNameForAsset and MD5")
        return await self._zip_response(request, members)

    async def _zip_response(self, request: Request, members: list[tuple[str, Path]]) -> Response:
        zips = self.state.data_dir / "zips"
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
            job = self.state.jobs.find(owner)
            if job is not None:
                root = Path(job[1]["WorkingDirectory"])
            else:
                root = Path(
                    json.loads(self.state.store.get(KINDS["WorkItem"], owner)["doc"]).get(
                        "WorkingDirectory"
                    )
                    or "/nonexistent"
                )
            target = _inside(root, rel)
            if not target.is_file():
                raise NotFound(f"no output {rel!r}")
            return target

        return self._file_response(request, await self.state.db(locate))

    def _file_response(self, request: Request, path: Path) -> Response:
        # Starlette streams the file in chunks and answers Range requests (206/416) itself.
        if not self.state.compat.honour_range and "range" in request.headers:
            request.scope["headers"] = [
                (k, v) for k, v in request.scope["headers"] if k.lower() != b"range"
            ]
        return FileResponse(
            path, media_type="application/octet-stream", headers={"Accept-Ranges": "bytes"}
        )

    async def download_blob(self, request: Request) -> Response:
        md5 = uuid.UUID(parse_uuid(request.path_params["md5"], "md5"))
        if not await self.state.blob_io(self.state.blobs.exists, md5):
            raise NotFound(f"no asset with md5 {md5}")
        return self._file_response(request, self.state.blobs.path(md5))

    async def download_zip(self, request: Request) -> Response:
        name = safe_name(request.path_params["name"], "zip name")
        path = self.state.data_dir / "zips" / name
        if not path.is_file():
            raise NotFound(f"no zip {name}")
        return self._file_response(request, path)


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
