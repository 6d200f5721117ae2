"""``Session``: one COMPS host, one pooled httpx transport, one pipeline of policies, behind
the request layer (``_requester.Requester``) that every resource and engine is given."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import httpx
from pydantic import SecretStr

from ._capabilities import Capabilities, load_capabilities
from ._constants import (
    DEFAULT_ANALYZE_WINDOW,
    DEFAULT_LIMITS,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_TIMEOUT,
)
from ._hosts import Host
from ._requester import Requester
from ._resources import (
    AssetCollections,
    EntityResource,
    Experiments,
    IdLike,
    Simulations,
    Suites,
    WorkItems,
)
from ._resources import environments as _environments
from ._resources.outputs import Outputs
from ._resources.peers import resource_of
from ._transfer.download import Downloader, DownloadSettings
from ._transfer.fingerprints import FingerprintCache, Hasher, default_cache_path
from ._transfer.upload import Uploader, UploadSettings
from ._transports import default_transport
from ._waiting import WaitSettings, WaitStatus, watch
from .analyze import Analysis, AnalyzedItem, Analyzer, Source
from .auth import CredentialPrompt, Credentials, TokenManager, console_prompt, interactive
from .models import Entity
from .pipeline import Policy
from .policies.auth import AuthPolicy
from .policies.concurrency import ConcurrencyPolicy
from .policies.logging import LoggingPolicy
from .policies.redaction import install_redaction
from .policies.retry import RetryPolicy

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "Session"]

logger = logging.getLogger(__name__)


class Session:
    """An authenticated connection to one COMPS host; use as ``async with Session(url) as s``.

    Arguments win over the environment: ``url`` falls back to ``COMPS_SERVER``, ``token`` to
    ``COMPS_TOKEN``, ``username``/``password`` to ``COMPS_USERNAME``/``COMPS_PASSWORD``. Without
    a token the session logs in with the credentials, or reuses a cached token of the same host
    (``COMPS_Authtoken_<host>_<user>.txt``, 0600).

    ``policies`` are added to the pipeline after authentication (they see every attempt);
    ``retry`` replaces the default ``RetryPolicy()``; ``transport`` replaces the default (the
    aiohttp-backed transport under asyncio, httpx's own under trio; see ``_transports.py``).
    TLS certificates are verified unless ``verify=False``.

    Creates are exactly once through two reserved tags on every new entity
    (``comps_async.key`` and ``comps_async.batch``, about 80 bytes); ``idempotency_tags=False``
    sends none, and a create whose answer was lost is then re-sent: at least once, so a lost
    answer can leave a duplicate.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | SecretStr | None = None,
        username: str | None = None,
        password: str | SecretStr | None = None,
        credential_prompt: CredentialPrompt | None = None,
        policies: Sequence[Policy] | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str = True,
        token_cache_dir: str | os.PathLike[str] | None = None,
        download: DownloadSettings | None = None,
        upload: UploadSettings | None = None,
        fingerprint_cache: str | os.PathLike[str] | bool = True,
        wait: WaitSettings | None = None,
        idempotency_tags: bool = True,
    ) -> None:
        install_redaction()  # no secret in any log, whatever the transport logs below us
        url = url or os.environ.get("COMPS_SERVER")
        if not url:
            raise ValueError("no COMPS host: pass Session(url) or set COMPS_SERVER")
        self.host = Host.parse(url)
        if token is None and username is None and password is None:
            token = os.environ.get("COMPS_TOKEN") or None
            username = os.environ.get("COMPS_USERNAME") or None
            password = os.environ.get("COMPS_PASSWORD") or None
        if (username is None) != (password is None):
            raise ValueError("pass both username and password, or neither")
        credentials = None
        if username is not None and password is not None:
            secret = password if isinstance(password, SecretStr) else SecretStr(password)
            credentials = Credentials(username, secret)
        self._token_secret = (
            token if isinstance(token, SecretStr) or token is None else SecretStr(token)
        )
        self._credentials = credentials
        if credential_prompt is None and credentials is None and token is None and interactive():
            credential_prompt = console_prompt  # as pyCOMPS: ask the person at the terminal
        self._prompt = credential_prompt
        self._user_policies = tuple(policies or ())
        self.retry = retry or RetryPolicy()
        self.concurrency = ConcurrencyPolicy(max_concurrent_requests)
        self._timeout = timeout
        self._limits = limits
        self._transport = transport
        self._verify = verify
        self._cache_dir = Path(token_cache_dir) if token_cache_dir is not None else None
        self._fingerprint_cache = fingerprint_cache
        self.wait_settings = wait or WaitSettings()
        # The request layer every resource and engine is given (never the Session itself).
        self._requester = Requester(
            self.host, timeout=self.timeout, retry=self.retry, idempotency_tags=idempotency_tags
        )
        self._hasher = Hasher(None)
        uploader = Uploader(self._requester, upload or UploadSettings())
        downloader = Downloader(self._requester, download or DownloadSettings())
        self.suites = Suites(self._requester, self)
        self.experiments = Experiments(self._requester, self)
        self.simulations = Simulations(
            self._requester, self, hasher=self._hasher, uploader=uploader
        )
        self.work_items = WorkItems(self._requester, self, hasher=self._hasher, uploader=uploader)
        self.outputs = Outputs(self._requester, self, downloader)
        self.asset_collections = AssetCollections(
            self._requester,
            self,
            hasher=self._hasher,
            uploader=uploader,
            downloader=downloader,
            outputs=self.outputs,
        )

    def __repr__(self) -> str:
        return f"Session({self.host.base!r})"

    @property
    def timeout(self) -> httpx.Timeout:
        """The timeouts of one request attempt (connect, read, write, pool)."""
        return (
            self._timeout
            if isinstance(self._timeout, httpx.Timeout)
            else httpx.Timeout(self._timeout)
        )

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._fingerprint_cache is not False:
            path = (
                default_cache_path()
                if self._fingerprint_cache is True
                else Path(self._fingerprint_cache)
            )
            try:
                self._hasher.cache = await anyio.to_thread.run_sync(FingerprintCache, path)
            except (OSError, sqlite3.Error) as exc:  # a read-only home only costs speed
                logger.warning("fingerprint cache %s unavailable: %s", path, exc)
        self.tokens = TokenManager(
            self.host,
            self._requester.send_unauthenticated,
            token=self._token_secret,
            credentials=self._credentials,
            prompt=self._prompt,
            cache_dir=self._cache_dir,
        )
        await self._requester.start(
            self._transport or default_transport(self._verify, self._limits, self.host.base),
            self.tokens,
            [
                self.retry,
                AuthPolicy(self.tokens),
                *self._user_policies,
                self.concurrency,
                LoggingPolicy(),
            ],
        )
        known = await anyio.to_thread.run_sync(load_capabilities, self.capabilities_file)
        if known is not None:  # what `comps-async doctor` measured (or a save learned) here
            self.adopt(known)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def capabilities(self) -> Capabilities:
        """What this host is known to answer where COMPS's behaviour is inferred."""
        return self._requester.capabilities

    @property
    def capabilities_file(self) -> Path:
        """Where ``doctor`` records what this host answered (beside the token cache)."""
        return self._requester.capabilities_file

    @property
    def idempotency_tags(self) -> bool:
        """Whether creates carry the reserved key tags (exactly once)."""
        return self._requester.idempotency_tags

    def adopt(self, known: Capabilities) -> None:
        """Use what a host is known to answer instead of finding out (see ``doctor``): the one
        record every call reads its facts from."""
        self._requester.capabilities = known

    async def aclose(self) -> None:
        """Cancel background work, close the connection pool and the fingerprint cache."""
        await self._requester.aclose()
        if self._hasher.cache is not None:
            self._hasher.cache.close()
            self._hasher.cache = None

    # --- requests ------------------------------------------------------------------------------

    async def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """Send a request for a protocol path (``Simulations/...`` or ``asset/...``) or an
        absolute server URL through the pipeline; the body is read. Options: ``params``,
        ``json``, ``content``, ``files``, ``headers``, ``timeout`` (a number is a deadline for
        the whole call, retries included), ``max_attempts``, ``idempotent``. Raises the typed
        ``ApiError`` for 3xx/4xx/5xx and ``TransferError`` when the connection failed for
        good."""
        return await self._requester.request(method, path, **options)

    def stream(
        self, method: str, path: str, **options: Any
    ) -> AbstractAsyncContextManager[httpx.Response]:
        """Like ``request`` but the body is left unread for ``aiter_bytes``; closed on exit."""
        return self._requester.stream(method, path, **options)

    def resource(self, entity: str | type[Entity]) -> EntityResource[Any]:
        """The resource of an entity type: ``"Simulation"``, ``"Simulations"`` or the class."""
        return resource_of(self, entity)

    # --- waiting ---------------------------------------------------------------------------------

    def watch(
        self,
        *,
        experiment_id: IdLike | None = None,
        simulation_ids: Iterable[IdLike] | None = None,
        work_item_id: IdLike | None = None,
    ) -> AsyncIterator[WaitStatus]:
        """Async iterator of state counts: now, after every change, until all are finished."""
        return watch(
            self,
            experiment_id=experiment_id,
            simulation_ids=simulation_ids,
            work_item_id=work_item_id,
            settings=self.wait_settings,
        )

    async def wait(
        self,
        *,
        experiment_id: IdLike | None = None,
        simulation_ids: Iterable[IdLike] | None = None,
        work_item_id: IdLike | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the public API pyCOMPS users expect
        on_change: Callable[[WaitStatus], object] | None = None,
    ) -> WaitStatus:
        """Wait until every watched entity is Succeeded, Failed or Canceled; returns the final
        counts. ``TimeoutError`` after ``timeout`` seconds (nothing is canceled on the server)."""
        status: WaitStatus | None = None
        with anyio.fail_after(timeout):
            async for status in self.watch(
                experiment_id=experiment_id,
                simulation_ids=simulation_ids,
                work_item_id=work_item_id,
            ):
                if on_change is not None:
                    on_change(status)
        assert status is not None
        return status

    # --- analysis --------------------------------------------------------------------------------

    def analyze(
        self,
        source: Source,
        analyzers: Sequence[Analyzer],
        *,
        executor: Executor | None = None,
        window: int = DEFAULT_ANALYZE_WINDOW,
        cache_dir: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        analyze_failed: bool = False,
        on_item: Callable[[AnalyzedItem], object] | None = None,
    ) -> Analysis:
        """Analyze the outputs of an experiment's simulations (or the items, or a query's) with
        idmtools-style ``Analyzer``s: ``map`` per item in ``executor`` (worker threads by
        default) while downloads go on, ``reduce`` once per analyzer. ``await`` the result for
        the ``AnalysisReport``, or ``async for`` over it for each item's outcome as it comes.
        Failures are reported, never fatal unless ``fail_fast``; ``cache_dir`` keeps map results
        so a re-run maps only what is new. See ``comps_async.analyze``."""
        return Analysis(
            self,
            self._requester.spawn,
            source,
            analyzers,
            executor=executor,
            window=window,
            cache_dir=cache_dir,
            fail_fast=fail_fast,
            analyze_failed=analyze_failed,
            on_item=on_item,
        )

    # --- environments (§2.7) -------------------------------------------------------------------

    async def environments(self) -> list[str]:
        """Names of the environments visible to the user."""
        return await _environments.names(self._requester)

    async def environment(self, name: str) -> dict[str, Any]:
        """One environment: ``{"EnvironmentName", "GroupName", "Macros": {...}}``."""
        return await _environments.get(self._requester, name)

    async def environment_macros(self, name: str) -> dict[str, str]:
        """The macros of an environment (e.g. ``DOCKER_MOUNTS``)."""
        return dict((await self.environment(name)).get("Macros") or {})
