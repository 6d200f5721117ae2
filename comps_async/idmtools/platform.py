"""``COMPS_ASYNC``: idmtools' COMPS platform on the comps_async engine.

It *is* idmtools-platform-comps' ``COMPSPlatform`` (a subclass: same fields, same ini block,
same login, token cache and credential prompt through pyCOMPS, same printed URLs, suites, work
items, SSMT and ``from_id``), with the paths comps_async does better going through a comps_async
``Session`` that shares pyCOMPS's token:

- creating simulations (``_operations.AsyncSimulationOperations``), exactly once;
- asset collections (fingerprint cache, dedup, parallel chunked uploads);
- waiting on an experiment: one Stats request per poll at adaptive intervals
  (``Session.wait``), simulation rows only at the end and only if the counts cannot say
  every simulation's state;
- output files; and ``AnalyzeManager`` (``_analysis``) in one process.

Why a subclass and not a platform of our own: everything a user does that is not a fast path
must behave exactly as the stock platform, and the surest way is to be it.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from COMPS import Client
from idmtools.config import IdmConfigParser
from idmtools.entities.experiment import Experiment
from idmtools_platform_comps.comps_platform import COMPSPlatform

from ._analysis import install_analysis_dispatch
from ._engine import Engine
from ._operations import (
    AsyncAssetCollectionOperations,
    AsyncExperimentOperations,
    AsyncSimulationOperations,
)

__all__ = ["COMPSAsyncPlatform"]

_ENGINE_LOCK = threading.Lock()


@dataclass(repr=False)
class COMPSAsyncPlatform(COMPSPlatform):  # type: ignore[misc]
    """idmtools' COMPS platform with comps_async's engine underneath (``type = COMPS_ASYNC``)."""

    _engine: Engine | None = field(
        default=None, init=False, repr=False, compare=False, metadata={"pickle_ignore": True}
    )
    _python: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._use_async_operations()
        install_analysis_dispatch(lambda platform: isinstance(platform, COMPSAsyncPlatform))

    def post_setstate(self) -> None:
        super().post_setstate()
        self._use_async_operations()

    def _use_async_operations(self) -> None:
        self._experiments = AsyncExperimentOperations(platform=self)
        self._simulations = AsyncSimulationOperations(platform=self)
        self._assets = AsyncAssetCollectionOperations(platform=self)

    def get_platform_python(self) -> str:
        """The cluster's Python (``python3``). idmtools asks for it once per simulation and
        answers by loading every installed plugin's entry points again (~5-10 ms each time,
        most of the stock platform's creation time); the answer never changes, so ask once."""
        if self._python is None:
            self._python = str(super().get_platform_python())
        return self._python

    def get_platform_type(self) -> str:
        """The plugin name idmtools looks this platform up by."""
        return "COMPS_ASYNC"

    @property
    def engine(self) -> Engine:
        """The comps_async session (started on first use, with pyCOMPS's token)."""
        with _ENGINE_LOCK:
            if self._engine is None:
                _, token = Client.auth_manager().get_auth_token()
                self._engine = Engine(self.endpoint, token)
                atexit.register(self._engine.close)  # idmtools has no close for a platform
            return self._engine

    def progress(self, description: str, total: int) -> Callable[[int, int], None] | None:
        """A progress callback as idmtools shows one (None when progress bars are off)."""
        if IdmConfigParser.is_progress_bar_disabled():
            return None
        from tqdm import tqdm  # type: ignore[import-untyped]

        bar = tqdm(total=total, desc=description, unit="simulation")

        def update(done: int, _total: int) -> None:
            bar.n = done
            bar.refresh()
            if done >= total:
                bar.close()

        return update

    # --- waiting -------------------------------------------------------------------------------

    def wait_till_done_progress(
        self,
        item: Any,
        timeout: int = 60 * 60 * 24,
        refresh_interval: int = 5,
        wait_progress_desc: str | None = None,
    ) -> None:
        """Experiments: one Stats request per poll (adaptive intervals), then statuses once."""
        if not isinstance(item, Experiment) or item.uid is None:
            super().wait_till_done_progress(item, timeout, refresh_interval, wait_progress_desc)
            return
        bar = self.progress(
            wait_progress_desc or f"Waiting on Experiment {item.name} to Finish running",
            len(item.simulations),
        )

        def on_change(status: Any) -> None:
            if bar is not None:
                finished = status.succeeded + status.failed
                bar(finished, status.total)

        engine = self.engine
        try:
            engine.call(
                engine.session.wait, experiment_id=item.uid, timeout=timeout, on_change=on_change
            )
        except TimeoutError:
            raise TimeoutError(f"Timeout of {timeout} seconds exceeded") from None
        self.refresh_status(item)

    def wait_till_done(
        self,
        item: Any,
        timeout: int = 60 * 60 * 24,
        refresh_interval: int = 5,
        progress: bool = True,
    ) -> None:
        """As ``wait_till_done_progress`` for experiments, with or without a progress bar."""
        if isinstance(item, Experiment) and item.uid is not None:
            self.wait_till_done_progress(item, timeout, refresh_interval)
            return
        super().wait_till_done(item, timeout, refresh_interval, progress)
