"""The COMPS "multi-chart": one line per simulation for one InsetChart channel (matplotlib)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MATPLOTLIB_MISSING", "active_days", "read_channel", "write_multichart"]

MATPLOTLIB_MISSING = "charts need matplotlib: pip install 'comps-async[charts]'"


def read_channel(inset_chart: Path, channel: str) -> list[float]:
    """The data of one channel of an EMOD InsetChart.json."""
    channels = json.loads(inset_chart.read_text())["Channels"]
    if channel not in channels:
        raise ValueError(
            f"no channel {channel!r} in {inset_chart.name}; channels: {', '.join(sorted(channels))}"
        )
    return [float(x) for x in channels[channel]["Data"]]


def write_multichart(
    series: Sequence[tuple[str, float, list[float]]],
    channel: str,
    out: Path,
    title: str,
    value_name: str = "",
) -> Path:
    """Plot every series on one axis, coloured by its swept value, beside a histogram of the
    peaks (blocking; call from a worker thread)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(MATPLOTLIB_MISSING) from None
    figure, (lines, peaks) = plt.subplots(
        1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]}
    )
    values = [value for _, value, _ in series]
    low, high = min(values, default=0.0), max(values, default=1.0)
    colours = matplotlib.colormaps["viridis"]
    for _, value, data in series:
        shade = (value - low) / (high - low) if high > low else 0.5
        lines.plot(data, linewidth=0.6, alpha=0.6, color=colours(shade))
    if value_name and high > low:
        scale = matplotlib.cm.ScalarMappable(
            norm=matplotlib.colors.Normalize(low, high), cmap=colours
        )
        figure.colorbar(scale, ax=lines, label=value_name)
    lines.set_title(channel)  # the count is in the figure's title
    lines.set_xlabel("day")
    lines.set_xlim(0, active_days([data for _, _, data in series]))
    fractions = all(0 <= x <= 1 for _, _, data in series for x in data)
    lines.set_ylabel(f"{channel} (fraction of population)" if fractions else channel)
    peaks.hist([max(data, default=0.0) for _, _, data in series], bins=30, color="tab:red")
    peaks.set_title(f"peak {channel}")
    peaks.set_xlabel(f"peak {channel}" + (" (fraction)" if fractions else ""))
    peaks.set_ylabel("simulations")
    figure.suptitle(title)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def active_days(series: Sequence[Sequence[float]]) -> int:
    """How many days the chart shows: up to the last day on which some series is still above
    1% of its own peak, plus a tenth for context (a run of 365 days whose epidemic ends on day
    200 is not drawn as a long flat line)."""
    last = 0
    for data in series:
        peak = max(data, default=0.0)
        if peak > 0:
            last = max(last, max(i for i, x in enumerate(data) if x > 0.01 * peak))
    longest = max((len(data) for data in series), default=1)
    return max(1, min(longest, int(last * 1.1) + 5))
