"""``Session``: one COMPS host, one pooled ``httpx.AsyncClient``, one pipeline of policies."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import httpx
from anyio.abc import TaskGroup
from pydantic import SecretStr

from ._constants import DEFAULT_MAX_CONCURRENT_REQUESTS
from .analyze import Analysis, AnalyzedItem, Analyzer, Source
from .auth import CredentialPrompt, Credentials, TokenManager, console_prompt, interactive
from .concurrency import deadline
from .doctor import Capabilities, capabilities_path, load_capabilities, save_capabilities
from .errors import (
    ApiError,
    MalformedResponseError,
    TransferError,
    error_for_status,
)
from .hosts import Host
from .models import Entity, entity_type
from .pipeline import (
    OPTION_DEADLINE,
    OPTION_IDEMPOTENT,
    OPTION_MAX_ATTEMPTS,
    OPTION_NO_AUTH,
    OPTION_STREAM,
    Pipeline,
    Policy,
    option,
)
from .policies import AuthPolicy, ConcurrencyPolicy, LoggingPolicy, RetryPolicy
from .policies.redaction import install_redaction
from .policies.retry import retry_after_s
from .resources import (
    AssetCollections,
    EntityResource,
    Experiments,
    IdLike,
    Simulations,
    Suites,
    WorkItems,
)
from .resources.outputs import Outputs
from .responses import json_list
from .transfer.download import Downloader, DownloadSettings
from .transfer.fingerprints import FingerprintCache, Hasher, default_cache_path
from .transfer.upload import Uploader, UploadSettings
from .transports import default_transport
from .waiting import WaitSettings, WaitStatus, watch

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "Session"]

logger = logging.getLogger(__name__)

# No timeout at all is pyCOMPS's worst failure mode (§14.1): a stalled socket hangs for ever.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=15.0)
DEFAULT_LIMITS = httpx.Limits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=30.0
)


class Session:
    """An authenticated connection to one COMPS host; use as ``async with Session(url) as s``.

    Arguments win over the environment: ``url`` falls back to ``COMPS_SERVER``, ``token`` to
    ``COMPS_TOKEN``, ``username``/``password`` to ``COMPS_USERNAME``/``COMPS_PASSWORD``. Without
    a token the session logs in with the credentials, or reuses a cached token of the same host
    (``COMPS_Authtoken_<host>_<user>.txt``, 0600).

    ``policies`` are added to the pipeline after authentication (they see every attempt);
    ``retry`` replaces the default ``RetryPolicy()``; ``transport`` replaces the default (the
    aiohttp-backed transport under asyncio, httpx's own under trio; see ``transports.py``).
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
        self._client: httpx.AsyncClient | None = None
        self._pipeline: Pipeline | None = None
        self._background: TaskGroup | None = None
        self.suites = Suites(self)
        self.experiments = Experiments(self)
        self.simulations = Simulations(self)
        self.work_items = WorkItems(self)
        self.asset_collections = AssetCollections(self)
        self.outputs = Outputs(self, Downloader(self, download or DownloadSettings()))
        self.uploader = Uploader(self, upload or UploadSettings())
        self._fingerprint_cache = fingerprint_cache
        self.hasher = Hasher(None)
        self.wait_settings = wait or WaitSettings()
        self.idempotency_tags = idempotency_tags
        # What this host is known to answer where COMPS's behaviour is inferred (PROTOCOL.md).
        self.capabilities = Capabilities(host=self.host.base)

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
                self.hasher.cache = await anyio.to_thread.run_sync(FingerprintCache, path)
            except (OSError, sqlite3.Error) as exc:  # a read-only home only costs speed
                logger.warning("fingerprint cache %s unavailable: %s", path, exc)
        transport = self._transport or default_transport(self._verify, self._limits)
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            limits=self._limits,
            transport=transport,
            verify=self._verify,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )
        self.tokens = TokenManager(
            self.host,
            self._send_without_auth,
            token=self._token_secret,
            credentials=self._credentials,
            prompt=self._prompt,
            cache_dir=self._cache_dir,
        )
        self._pipeline = Pipeline(
            [
                self.retry,
                AuthPolicy(self.tokens),
                *self._user_policies,
                self.concurrency,
                LoggingPolicy(),
            ],
            self._transport_send,
        )
        known = await anyio.to_thread.run_sync(load_capabilities, self.capabilities_file)
        if known is not None:  # what `comps-async doctor` measured (or a save learned) here
            self.adopt(known)
        # Background work that must outlive one call but not the session (harvest producers):
        # its tasks never raise; failures travel to the caller through their own streams.
        self._background = anyio.create_task_group()
        await self._background.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._background is not None:
            self._background.cancel_scope.cancel()
            await self._background.__aexit__(None, None, None)
            self._background = None
        await self.aclose()

    @property
    def capabilities_file(self) -> Path:
        """Where ``doctor`` records what this host answered (beside the token cache)."""
        return capabilities_path(self.tokens.cache_dir, self.host.cache_key)

    def adopt(self, known: Capabilities) -> None:
        """Use what a host is known to answer instead of finding out (see ``doctor``)."""
        self.capabilities = known
        if known.stats_forms:
            self.experiments.stats_form = self.suites.stats_form = known.stats_forms[0]
        if known.ids_param in ("ignore", "reject"):
            for resource in (self.simulations, self.work_items, self.experiments, self.suites):
                resource.ids_param_works = False

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``fn`` in the session's background task group (it must not raise)."""
        if self._background is None:
            raise RuntimeError("use the Session inside 'async with Session(...) as s:'")
        self._background.start_soon(fn)

    async def remember(self, **answers: str) -> None:
        """Record what this host was found to answer (e.g. ``shared_parts="no"``) for this
        session and, beside the token cache, for later ones."""
        for name, answer in answers.items():
            setattr(self.capabilities, name, answer)
        await anyio.to_thread.run_sync(save_capabilities, self.capabilities_file, self.capabilities)

    async def aclose(self) -> None:
        """Close the connection pool and the fingerprint cache."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.hasher.cache is not None:
            self.hasher.cache.close()
            self.hasher.cache = None

    # --- requests ------------------------------------------------------------------------------

    def build_request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_attempts: int | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Request:
        """A request for a protocol path (``Simulations/...`` or ``asset/...``) or an absolute
        server URL (re-rooted on this host), with per-call options."""
        client = self._require_client()
        url = self.host.reroot(path) if "://" in path else self.host.url(path)
        if json is None and content is None and files is None:
            # pyCOMPS says JSON on every call without a body of its own, GETs included (§3.1,
            # §9; tests/test_wire_parity.py); aiohttp would label a body-less PUT/POST
            # application/octet-stream.
            headers = {"Content-Type": "application/json", **(headers or {})}
        request = client.build_request(
            method,
            url,
            params=params,
            json=json,
            content=content,
            files=files,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
        if isinstance(timeout, int | float):  # the whole call, retries included
            request.extensions[OPTION_DEADLINE] = time.monotonic() + timeout
        if max_attempts is not None:
            request.extensions[OPTION_MAX_ATTEMPTS] = max_attempts
        if idempotent is not None:
            request.extensions[OPTION_IDEMPOTENT] = idempotent
        return request

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request through the pipeline; raise the typed ApiError for 4xx/5xx and
        TransferError when the connection failed for good. See ``build_request``."""
        return await self.send(self.build_request(method, path, **kwargs))

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Send a built request through the pipeline, with error translation."""
        response = await self._send_raw(request)
        _release_body(request)
        # Redirects are not followed (a custom token header would follow them to any host):
        # a 3xx is as unexpected as a 4xx, and typed the same way.
        if response.status_code >= 300:
            await response.aread()
            raise api_error(response)
        return response

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """Like ``request`` but the body is left unread for ``aiter_bytes``; closed on exit."""
        request = self.build_request(method, path, **kwargs)
        request.extensions[OPTION_STREAM] = True
        response = await self.send(request)
        try:
            yield response
        except httpx.TransportError as exc:  # reading the body: the same boundary as sending
            raise _transfer_error(request, exc) from exc
        finally:
            await response.aclose()

    async def _send_raw(self, request: httpx.Request) -> httpx.Response:
        if self._pipeline is None:
            raise RuntimeError("use the Session inside 'async with Session(...) as s:'")
        end = option(request, OPTION_DEADLINE)
        try:
            with deadline(None if end is None else end - time.monotonic(), request.method):
                return await self._pipeline.send(request)
        except httpx.TransportError as exc:
            raise _transfer_error(request, exc) from exc

    async def _send_without_auth(self, request: httpx.Request) -> httpx.Response:
        # The /tokens calls go through retry and logging but not through AuthPolicy.
        request.extensions[OPTION_NO_AUTH] = True
        return await self._send_raw(request)

    async def _transport_send(self, request: httpx.Request) -> httpx.Response:
        client = self._require_client()
        response = await client.send(request, stream=True)
        if not option(request, OPTION_STREAM):
            try:
                await response.aread()  # inside the pipeline, so a cut body is retried
            except BaseException:
                await response.aclose()
                raise
        return response

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("use the Session inside 'async with Session(...) as s:'")
        return self._client

    def resource(self, entity: str | type[Entity]) -> EntityResource[Any]:
        """The resource of an entity type: ``"Simulation"``, ``"Simulations"`` or the class."""
        resources: dict[str, EntityResource[Any]] = {
            "Suite": self.suites,
            "Experiment": self.experiments,
            "Simulation": self.simulations,
            "WorkItem": self.work_items,
            "AssetCollection": self.asset_collections,
        }
        return resources[entity_type(entity).__name__]

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
        window: int = 16,
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
        response = await self.request("GET", "environments")
        return [str(e.get("EnvironmentName")) for e in json_list(response, "Environments")]

    async def environment(self, name: str) -> dict[str, Any]:
        """One environment: ``{"EnvironmentName", "GroupName", "Macros": {...}}``."""
        if not name or "/" in name:
            raise ValueError(f"invalid environment name {name!r}")
        response = await self.request("GET", f"Environments/{name}")
        items = json_list(response, "Environments")
        if len(items) != 1:
            raise MalformedResponseError(f"expected one environment {name!r}, got {len(items)}")
        return dict(items[0])

    async def environment_macros(self, name: str) -> dict[str, str]:
        """The macros of an environment (e.g. ``DOCKER_MOUNTS``)."""
        return dict((await self.environment(name)).get("Macros") or {})


def _transfer_error(request: httpx.Request, exc: httpx.TransportError) -> TransferError:
    """The typed error for a connection that failed (httpx errors are translated here only)."""
    if isinstance(exc, httpx.TimeoutException):
        return TransferError(
            f"{request.method} timed out ({type(exc).__name__})", url=str(request.url)
        )
    hint = None
    if request.url.scheme == "https" and any(
        "WRONG_VERSION_NUMBER" in str(cause) for cause in _causes(exc)
    ):
        # The server answered TLS with plain HTTP: a host given without a scheme means https.
        plain = request.url.copy_with(scheme="http", path="/", query=None)
        hint = f"The server speaks plain HTTP: did you mean {str(plain).rstrip('/')}?"
    return TransferError(
        f"{request.method} failed: {type(exc).__name__}: {exc}", url=str(request.url), hint=hint
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (httpx under trio keeps the TLS reason there)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _release_body(request: httpx.Request) -> None:
    """Drop a sent request's body. Once the pipeline has returned it is never sent again, and
    reference cycles inside tenacity and aiohttp would otherwise keep every uploaded body alive
    until the next full garbage collection (hundreds of MB during a bulk upload)."""
    request.stream = httpx.ByteStream(b"")
    if "_content" in vars(request):
        request._content = b""


def api_error(response: httpx.Response) -> ApiError:
    """The typed error for a 4xx/5xx response, with ResponseMessage and CorrelationId (§3.3)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text[:200].strip() if response.content else ""
        body = {"ResponseMessage": text or response.reason_phrase}
    message = str(body.get("ResponseMessage") or response.reason_phrase)
    if 300 <= response.status_code < 400:
        message = f"unexpected redirect to {response.headers.get('location', '?')}"
    return error_for_status(response.status_code)(
        response.status_code,
        message,
        correlation_id=body.get("CorrelationId"),
        details={k: v for k, v in body.items() if k not in ("ResponseMessage", "CorrelationId")},
        method=response.request.method,
        url=str(response.request.url.copy_with(query=None)),
        retry_after_s=retry_after_s(response),
    )
