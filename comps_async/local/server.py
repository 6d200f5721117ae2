"""``LocalComps``: the local COMPS server as a context manager (async or sync).

The server always runs in its own thread with its own asyncio loop (uvicorn is asyncio-only), so
it serves callers on asyncio, trio or plain threads alike, over a real socket on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.to_thread
import uvicorn

from ..models import Configuration
from . import sir
from .app import build_app
from .auth import DEFAULT_USER, UserDirectory
from .blobs import BlobStore
from .dashboard import History
from .faults import FaultConfig, FaultInjector, FaultyApp
from .recorder import WireRecorder
from .routes.auth import AuthRoutes
from .routes.control import ControlRoutes
from .routes.dashboard import DashboardRoutes
from .routes.entities import EntityRoutes
from .routes.files import FileRoutes
from .routes.lifecycle import LifecycleRoutes
from .runner import Runner
from .state import Compat, ServerLimits, ServerState
from .store import Store

__all__ = ["LocalComps", "sir_configuration"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0


def sir_configuration() -> Configuration:
    """The Configuration that runs the built-in SIR model (``comps_async.local.sir``) on the
    local server, reading each simulation's ``config.json`` (and ``campaign.json`` if the
    config names one)."""
    # The script by its path, not ``-m comps_async.local.sir``: importing the package would load
    # the whole SDK in every simulation (0.4 s each, ten times the model's own run time).
    script = shlex.quote(str(Path(sir.__file__).resolve()))
    return Configuration(
        environment_name="Local",
        executable_path="python3",  # the local server's own interpreter
        simulation_input_args=f"{script} --config config.json",
    )


class _QuietInjectedFaults(logging.Filter):
    """Injected resets are deliberate; keep their tracebacks out of the server log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "_InjectedReset"


class LocalComps:
    """A COMPS-compatible server on 127.0.0.1 backed by ``data_dir``.

    ``url`` and ``token`` (a token of the default user) are available once started. Everything
    persists in ``data_dir``: stop and start again on the same directory and it is all there.
    ``faults`` holds the fault/load injection knobs and per-route ``counters``; ``compat``
    plays the other answers where real COMPS may differ (see ``Compat`` and PROTOCOL.md).
    ``record_requests=True`` keeps every request as received in ``recorder`` (``WireRecorder``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int = 0,
        users: dict[str, str] | None = None,
        faults: FaultConfig | None = None,
        limits: ServerLimits | None = None,
        compat: Compat | None = None,
        max_concurrent_runs: int | None = None,
        token_lifetime: timedelta = timedelta(hours=4),
        poll_interval_s: float = 0.2,
        record_requests: bool = False,
        dashboard_interval_s: float = 30.0,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="comps-local-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"  # never another interface: this server is for one machine
        self.port = port
        self.store = Store(self.data_dir / "comps.sqlite3")
        self.user_directory = UserDirectory(self.data_dir / "users.json", token_lifetime)
        self.initial_password = self.user_directory.initial_password
        for name, password in (users or {}).items():
            self.user_directory.set_password(name, password)
        self.history = History(self.store, dashboard_interval_s)
        self.blobs = BlobStore(self.data_dir / "blobs")
        self.state = ServerState(
            self.data_dir,
            self.store,
            self.blobs,
            self.user_directory,
            limits or ServerLimits(),
            compat or Compat(),
        )
        self.runner = Runner(
            self.state, max_concurrent_runs or os.cpu_count() or 2, poll_interval_s
        )
        self.faults = FaultInjector(faults or FaultConfig())
        app = build_app(
            self.user_directory,
            accounts=AuthRoutes(self.state),
            dashboard=DashboardRoutes(self.state, self.history),
            control=ControlRoutes(self.faults),
            entities=EntityRoutes(self.state),
            lifecycle=LifecycleRoutes(self.state, on_commission=self.runner.wake),
            files=FileRoutes(self.state),
        )
        # Faults outside the app; the recorder outermost, so it sees what clients sent.
        self.asgi = FaultyApp(app, self.faults)
        self.recorder = WireRecorder(self.asgi) if record_requests else None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        """A fresh token of the default local user."""
        return self.user_directory.mint(self.user_directory.user(DEFAULT_USER))

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving in a background thread; returns once the socket accepts connections."""
        self._thread = threading.Thread(
            target=self._serve_in_thread, name="comps-local", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S) or self._failure is not None:
            raise RuntimeError(f"local COMPS server did not start: {self._failure}")

    def stop(self) -> None:
        """Stop serving and close the database."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(_START_TIMEOUT_S)
            self._thread = None
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the ``serve`` command)."""
        asyncio.run(self._main())

    def _serve_in_thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to start()
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        uvicorn_log = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _QuietInjectedFaults) for f in uvicorn_log.filters):
            uvicorn_log.addFilter(_QuietInjectedFaults())
        config = uvicorn.Config(
            self.recorder or self.asgi,
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.runner.run_forever)
            tg.start_soon(self.history.run_forever, self.state.db)
            tg.start_soon(self._announce_when_started)
            await self._server.serve()
            tg.cancel_scope.cancel()

    async def _announce_when_started(self) -> None:
        assert self._server is not None
        with anyio.fail_after(_START_TIMEOUT_S):
            while not self._server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
                await anyio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.state.url = self.url
        self._ready.set()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)
