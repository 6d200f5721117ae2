"""What every route of the local server shares: one data directory's store, blobs and users,
the request-size caps and the compatibility switches, and the worker threads for blocking work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread

from .auth import UserDirectory
from .blobs import BlobStore
from .jobs import Jobs
from .lifecycle import Lifecycle
from .store import Store

__all__ = ["Compat", "ServerLimits", "ServerState"]


@dataclass(frozen=True)
class ServerLimits:
    """Request-size caps (§8.1, §8.3); a larger request is answered 413."""

    max_batch_bytes: int = 38912 * 1024
    max_asset_collection_bytes: int = 407552 * 1024
    max_form_parts: int = 100_000


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
    # Whether /upload accepts chunks out of order (unknown for real COMPS, §8.4): off, like a
    # server that only knows in-order uploads; on, to exercise UploadSettings(parallel_chunks).
    out_of_order_chunks: bool = False
    # The environments this server offers. Empty (the default): any EnvironmentName is accepted,
    # so an idmtools block written for ``Calculon`` runs offline. Given: an experiment,
    # simulation or work item naming another is refused with 400, as COMPS refuses it.
    environments: tuple[str, ...] = ()


@dataclass
class ServerState:
    """The shared state of one server; route modules receive it, never each other."""

    data_dir: Path
    store: Store  # entities, files, tags; and over it, the SQL of jobs and of state changes:
    jobs: Jobs = field(init=False)
    lifecycle: Lifecycle = field(init=False)
    blobs: BlobStore
    users: UserDirectory
    limits: ServerLimits = field(default_factory=ServerLimits)
    compat: Compat = field(default_factory=Compat)
    # The address clients reach this server at, known once its socket is bound (jobs are told
    # it as COMPS_SERVER).
    url: str = ""
    # Sqlite is serialised by the store's lock anyway; a limiter keeps worker threads few. It is
    # created on first use, inside the server's own event loop.
    _db: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)
    # Blob hashing and writing gets threads of its own, so that sqlite work is never queued
    # behind a large upload.
    _blob_io: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.jobs = Jobs(self.store)
        self.lifecycle = Lifecycle(self.store)

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
