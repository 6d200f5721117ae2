"""``comps-async demo``: the whole loop against an embedded local server.

Starts the local COMPS server in-process, uploads an asset collection (the COMPS docs' example
campaign), submits an experiment of N runs of the built-in SIR model sweeping Base_Infectivity,
commissions as batches land, waits, analyzes InsetChart.json of every simulation as it lands
(``Session.analyze``) and writes a multi-chart PNG and a summary table.
"""

from __future__ import annotations

import csv
import json
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import click
from rich.markup import escape
from rich.table import Table

from .._session import Session
from ..analyze import Analyzer
from ..local import LocalComps
from ..models import AssetCollectionFile, Configuration, Experiment, Simulation, SimulationFile
from .chart import MATPLOTLIB_MISSING, write_multichart
from .common import bytes_progress, console, count_progress
from .main import cli, emit, run_async

CHANNEL = "Infected"


def _example(name: str) -> bytes:
    return resources.files("comps_async.local").joinpath("examples", name).read_bytes()


def _inputs() -> list[AssetCollectionFile]:
    """The model (stdlib only, so each run starts fast) and the COMPS docs' campaign, seeding
    0.5% of the population instead of 64% so that Base_Infectivity visibly matters."""
    campaign = json.loads(_example("campaign.json"))
    for event in campaign["Events"]:
        event["Event_Coordinator_Config"]["Demographic_Coverage"] = 0.005
    model = resources.files("comps_async.local").joinpath("sir.py").read_bytes()
    return [
        AssetCollectionFile.from_bytes("sir.py", model),
        AssetCollectionFile.from_bytes("campaign.json", json.dumps(campaign, indent=1).encode()),
    ]


def _config_for(index: int, infectivity: float, base: dict[str, object]) -> bytes:
    params = dict(base["parameters"])  # type: ignore[call-overload]
    params.update(
        {"Base_Infectivity": infectivity, "Run_Number": index, "Simulation_Duration": 365}
    )
    return json.dumps({"parameters": params}, indent=1).encode()


@cli.command()
@click.option(
    "--sims",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Simulations in the sweep.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="Where results go.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the local server's data here (default: a temporary directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@run_async
async def demo(sims: int, out: Path, data_dir: Path | None, as_json: bool) -> None:
    """Run a Base_Infectivity sweep of the SIR model end to end on a local server."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="comps-demo-") as scratch:
        async with LocalComps(data_dir or Path(scratch) / "server") as server:
            console.print(
                f"local COMPS server at [bold]{server.url}[/] (data in {server.data_dir})"
            )
            async with Session(server.url, token=server.token) as session:
                summary = await _run(session, sims, out)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    emit(summary, as_json, f"done in {summary['seconds']} s; results in {summary['results']}")


async def _run(session: Session, count: int, out: Path) -> dict[str, object]:
    base_config = json.loads(_example("config.json"))
    with bytes_progress() as bar:
        task = bar.add_task("asset collection", total=None)
        collection = await session.asset_collections.create(
            _inputs(),
            tags={"Name": "SIR demo inputs"},
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    experiment = await session.experiments.create(
        Experiment(
            name=f"SIR Base_Infectivity sweep ({count})",
            configuration=Configuration(
                environment_name="Local",
                executable_path="python3",
                simulation_input_args="Assets/sir.py --config config.json "
                "--campaign Assets/campaign.json",
                asset_collection_id=collection.id,
                maximum_number_of_retries=1,
            ),
        )
    )
    infectivity = {i: round(0.05 + 1.45 * i / max(count - 1, 1), 4) for i in range(count)}
    simulations = (
        Simulation(
            name=f"sir-{i:05d}",
            experiment_id=experiment.id,
            tags={"Base_Infectivity": infectivity[i], "Run_Number": i},
            files=[
                SimulationFile.from_bytes(
                    "config.json", _config_for(i, infectivity[i], base_config)
                )
            ],
        )
        for i in range(count)
    )
    with count_progress() as bar:
        task = bar.add_task("submit (commissioning as batches land)", total=count)
        await session.simulations.save_all(
            simulations,
            commission=True,
            on_progress=lambda done, _: bar.update(task, completed=done),
        )
        waiting = bar.add_task("run", total=count)
        final = await session.wait(
            experiment_id=experiment,
            on_change=lambda status: bar.update(
                waiting, completed=status.succeeded + status.failed
            ),
        )
    with count_progress() as bar:
        task = bar.add_task("analyze InsetChart.json as it lands", total=final.succeeded)
        # Each chart is read and mapped in a worker thread while the next ones download; the
        # map results stay on disk, so a re-run of the analysis maps nothing twice.
        report = await session.analyze(
            experiment,
            [Curves()],
            cache_dir=out / "analysis-cache",
            on_item=lambda _: bar.advance(task),
        )
    series: list[tuple[str, float, list[float]]] = report.reduced["Curves"]
    failures = len(report.failures) - final.failed  # the failed runs are reported there too
    return await anyio.to_thread.run_sync(
        _report, series, out, experiment, final.succeeded, final.failed + failures
    )


class Curves(Analyzer):
    """One InsetChart channel per simulation, with its swept Base_Infectivity, sorted by it."""

    filenames = ("output/InsetChart.json",)

    def map(self, data: dict[str, Any], item: Any) -> tuple[str, float, list[float]]:
        chart = data["output/InsetChart.json"]
        beta = float((item.tags or {}).get("Base_Infectivity") or 0)
        return str(item.name), beta, [float(x) for x in chart["Channels"][CHANNEL]["Data"]]

    def reduce(self, results: Any, failures: Any) -> list[tuple[str, float, list[float]]]:
        return sorted(results.values(), key=lambda curve: curve[1])


def _report(
    series: list[tuple[str, float, list[float]]],
    out: Path,
    experiment: Experiment,
    succeeded: int,
    failed: int,
) -> dict[str, object]:
    """Blocking (file writes, matplotlib): the CSV, the chart and the summary table."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        (name, beta, max(data, default=0.0), data.index(max(data)) if data else 0)
        for name, beta, data in series
    ]
    table_path = out / "summary.csv"
    with open(table_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["simulation", "Base_Infectivity", f"peak_{CHANNEL}", "peak_day"])
        writer.writerows(rows)
    chart: Path | None = out / "multichart.png"
    try:
        write_multichart(
            series,
            CHANNEL,
            out / "multichart.png",
            f"{experiment.name} - {len(series)} simulations",
            "Base_Infectivity",
        )
    except RuntimeError as exc:
        if str(exc) != MATPLOTLIB_MISSING:
            raise
        console.print(f"[yellow]{escape(str(exc))}[/]")  # keeps [charts] in the hint
        chart = None
    table = Table(title=f"{experiment.name}: peak {CHANNEL} by Base_Infectivity")
    for column in ("simulation", "Base_Infectivity", f"peak {CHANNEL}", "peak day"):
        table.add_column(column, justify="right")
    for name, beta, peak, day in rows[:: max(1, len(rows) // 10)]:
        table.add_row(name, f"{beta:.3f}", f"{peak:.3f}", str(day))
    console.print(table)
    console.print(f"experiment {experiment.id}: {succeeded} succeeded, {failed} failed")
    console.print(f"chart:   {escape(str(chart or '(matplotlib not installed)'))}")
    console.print(f"table:   {escape(str(table_path))}")
    return {
        "experiment_id": str(experiment.id),
        "succeeded": succeeded,
        "failed": failed,
        "chart": str(chart) if chart else None,
        "summary_csv": str(table_path),
        "results": str(out),
    }
