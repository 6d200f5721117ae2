"""idmtools' ``AnalyzeManager`` on ``Session.analyze``, in one process.

idmtools has no hook for analysis, so the platform installs one dispatch on
``AnalyzeManager.analyze`` the first time a ``COMPS_ASYNC`` platform is made: a manager whose
platform is ``COMPS_ASYNC`` runs here; any other manager runs idmtools' own code, unchanged.

Here: the items are the ones idmtools itself chose (``AnalyzeManager._get_items_to_analyze``:
its flattening, ``partial_analyze_ok``, ``max_items``, ``exclude_ids``, ``analyze_failed_items``),
the analyzers are the user's unchanged ``IAnalyzer``s (``initialize``, ``per_group``,
``filter``, ``map(data, item)`` with idmtools' own file parsing and the very item object idmtools
would pass, ``reduce(all_data)`` keyed by those items, ``destroy``). Files download and parse as
they land, at most ``window`` items at once, maps run in threads of this process; a ``map``
that raises (or an item whose files fail) is reported and the rest are analysed — idmtools'
pool would stop at the first.
"""

from __future__ import annotations

import functools
import glob
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from idmtools.analysis.analyze_manager import AnalyzeManager
from idmtools.core import ItemType
from idmtools.core.logging import SUCCESS
from idmtools.utils.file_parser import FileParser
from idmtools.utils.general import FilterSafeItem
from idmtools.utils.language import verbose_timedelta

from .. import models as ca
from ..analyze import AnalysisFailure, AnalysisReport, Analyzer

# idmtools' logger for what a user reads.
user_logger = logging.getLogger("user")

__all__ = ["install_analysis_dispatch"]

# Items in flight: enough to keep a far COMPS busy (each item is a listing and its files, a
# round trip or two) where idmtools runs a pool of 24 processes; memory stays bounded by it.
_WINDOW = 64


class _IdmtoolsAnalyzer(Analyzer):
    """One user ``IAnalyzer`` seen through comps_async's ``Analyzer``."""

    parse = False  # idmtools' own FileParser parses, so users get exactly what they get today

    def __init__(self, analyzer: Any, items: Mapping[UUID, Any]) -> None:
        self._analyzer = analyzer
        self._items = items
        self._paths = [str(f).replace("\\", "/") for f in analyzer.filenames]
        self.filenames = [glob.escape(p) for p in self._paths]  # names, not patterns

    @property
    def name(self) -> str:
        return str(self._analyzer.uid)

    def filter(self, item: ca.Simulation | ca.WorkItem) -> bool:
        return bool(self._analyzer.filter(FilterSafeItem(self._items[item.id])))  # type: ignore[index]

    def map(self, data: dict[str, Any], item: ca.Simulation | ca.WorkItem) -> Any:
        if self._analyzer.parse:
            data = {path: FileParser.parse(path, content) for path, content in data.items()}
        return self._analyzer.map(data, self._items[item.id])  # type: ignore[index]

    def reduce(self, results: Mapping[UUID, Any], failures: Sequence[AnalysisFailure]) -> Any:
        return self._analyzer.reduce({self._items[k]: v for k, v in results.items()})


def _run(manager: Any) -> bool:
    """``AnalyzeManager.analyze`` for a ``COMPS_ASYNC`` platform (same checks and messages)."""
    started = time.monotonic()
    if not manager.analyzers:
        user_logger.error("No analyzers were provided; cannot run analysis.")
        return False
    manager._initialize_analyzers()
    if not manager.potential_items:
        user_logger.error("No items were provided; cannot run analysis.")
        return False
    manager._items = manager._get_items_to_analyze()
    if not manager._items:
        user_logger.error("No items are ready; cannot run analysis.")
        return False
    for analyzer in manager.analyzers:
        analyzer.per_group(items=manager._items)
    items = {UUID(str(uid)): item for uid, item in manager._items.items()}
    sources: list[ca.Simulation | ca.WorkItem] = [
        ca.WorkItem(id=uid) if _is_work_item(item) else ca.Simulation(id=uid)
        for uid, item in items.items()
    ]
    adapters = [_IdmtoolsAnalyzer(a, items) for a in manager.analyzers]
    engine = manager.platform.engine
    report: AnalysisReport = engine.call(_analyze, engine.session, sources, adapters)
    for failure in report.failures:
        user_logger.error(f"Analysis of {failure.item_id} failed: {failure}")
    for analyzer, adapter in zip(manager.analyzers, adapters, strict=True):
        analyzer.results = report.reduced[adapter.name]
    for analyzer in manager.analyzers:
        analyzer.destroy()
    if manager.verbose:
        took = time.monotonic() - started
        user_logger.log(
            SUCCESS,
            f"\r | Analysis complete. Took {verbose_timedelta(took)} "
            f"(~ {took / len(items):.3f} per item)",
        )
    return True


async def _analyze(session: Any, sources: list[Any], adapters: list[Analyzer]) -> AnalysisReport:
    # Items were chosen by idmtools (failed ones only with analyze_failed_items).
    return await session.analyze(  # type: ignore[no-any-return]
        sources, adapters, analyze_failed=True, window=_WINDOW
    )


def _is_work_item(item: Any) -> bool:
    return (
        getattr(item, "item_type", None) == ItemType.WORKFLOW_ITEM
        or type(item).__name__ == "WorkItem"
    )


def install_analysis_dispatch(is_ours: Callable[[Any], bool]) -> None:
    """Route ``AnalyzeManager.analyze`` here for managers whose platform ``is_ours`` (once)."""
    original = AnalyzeManager.analyze
    if getattr(original, "_comps_async", False):
        return

    @functools.wraps(original)
    def analyze(self: Any) -> bool:
        if is_ours(self.platform):
            return _run(self)
        return bool(original(self))

    analyze._comps_async = True  # type: ignore[attr-defined]
    AnalyzeManager.analyze = analyze
