"""Client commands: the pyCOMPS utilities (§13) and a few more, over the async SDK."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._query import Query
from .._resources.asset_collections import DEFAULT_EXCLUDE, files_from_dir
from .._resources.base import StatefulResource
from .._responses import json_list
from .._session import Session
from .._waiting import WaitStatus
from ..analyze import Analyzer
from ..auth import TokenInfo
from ..doctor import describe, diagnose
from ..errors import AuthenticationError, NotFoundError
from ..models import (
    AssetCollectionFile,
    Entity,
    Experiment,
    Simulation,
    WorkItem,
)
from .chart import read_channel, write_multichart
from .common import (
    ENTITY_TYPES,
    bytes_progress,
    connection_options,
    console,
    count_progress,
    open_session,
)
from .main import cli, emit, run_async

_RESOURCE = {
    "simulation": "Simulation",
    "experiment": "Experiment",
    "suite": "Suite",
    "workitem": "WorkItem",
}


def _stateful(session: Session, entity_type: str) -> StatefulResource[Any]:
    """The session's resource for a command-line entity type (``simulation``, ``workitem``, …)."""
    resources: dict[str, StatefulResource[Any]] = {
        "simulation": session.simulations,
        "experiment": session.experiments,
        "suite": session.suites,
        "workitem": session.work_items,
    }
    return resources[entity_type.lower()]


async def _current_user(session: Session) -> str:
    token = await session.tokens.token()
    try:
        return TokenInfo.parse(token).user
    except ValueError as exc:
        raise AuthenticationError(401, f"cannot tell who you are: {exc}") from None


async def _resolve(session: Session, entity_type: str, entity_id: str) -> Entity:
    """The entity for an id, or the newest of the current user's for ``latest``."""
    resource = _stateful(session, entity_type)
    if entity_id.lower() != "latest":
        try:
            entity: Entity = await resource.get(entity_id)
            return entity
        except NotFoundError:
            raise NotFoundError(
                404, f"no {entity_type} with id {entity_id} (is it another entity type?)"
            ) from None
    user = await _current_user(session)
    query = Query().where([f"owner={user}"]).orderby("date_created desc").count(1)
    newest: list[Entity] = await resource.list(query)
    if not newest:
        raise NotFoundError(404, f"{user} has no {entity_type}s")
    return newest[0]


# --- login -------------------------------------------------------------------------------------


@cli.command()
@connection_options
@run_async
async def login(server: str | None, token: str | None, username: str | None, as_json: bool) -> None:
    """Log in and cache the token (0600) for later commands."""
    if not username:
        username = click.prompt("Username", err=True)
    async with open_session(server, None, username) as session:
        value = await session.tokens.login()  # the password is checked, not a cached token
        info = TokenInfo.parse(value)
        cache = session.tokens.cache_file
    emit(
        {"user": info.user, "expires": info.expires.isoformat(), "token_cache": str(cache)},
        as_json,
        f"logged in to {server} as {info.user} until {info.expires:%Y-%m-%d %H:%M} "
        f"UTC; token cached in {cache}",
    )


# --- status ------------------------------------------------------------------------------------


@cli.command()
@click.argument("entity_type", type=ENTITY_TYPES)
@click.argument("entity_id")
@click.option("--watch", "-w", is_flag=True, help="Keep reporting until everything finishes.")
@connection_options
@run_async
async def status(
    entity_type: str,
    entity_id: str,
    watch: bool,
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """State of a simulation or work item, or state counts of an experiment (ID or 'latest')."""
    async with open_session(server, token, username) as session:
        entity = await _resolve(session, entity_type, entity_id)
        kind = _RESOURCE[entity_type.lower()]
        target: dict[str, Any]
        if kind == "Experiment":
            target = {"experiment_id": entity}
        elif kind == "Simulation":
            target = {"simulation_ids": [entity]}
        elif kind == "WorkItem":
            target = {"work_item_id": entity}
        else:
            raise click.UsageError("status works on simulations, experiments and work items")

        def show(state: WaitStatus) -> None:
            emit(
                {
                    "id": str(entity.id),
                    "type": kind,
                    "counts": state.counts,
                    "finished": state.finished,
                },
                as_json,
                f"{kind} {entity.id}: {state}",
            )

        if watch:
            await session.wait(on_change=show, **target)
        else:
            async for state in session.watch(**target):
                show(state)
                break


# --- tail --------------------------------------------------------------------------------------


@cli.command()
@click.argument("entity_type", type=click.Choice(["simulation", "workitem"], case_sensitive=False))
@click.argument("entity_id")
@click.option(
    "--file",
    "files",
    default="stdout.txt,stderr.txt",
    show_default=True,
    help="Comma-separated output paths.",
)
@click.option("--bytes", "nbytes", type=click.IntRange(1), default=1024, show_default=True)
@connection_options
@run_async
async def tail(
    entity_type: str,
    entity_id: str,
    files: str,
    nbytes: int,
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """The end of output files of a simulation or work item (ID or 'latest')."""
    async with open_session(server, token, username) as session:
        entity = await _resolve(session, entity_type, entity_id)
        assert isinstance(entity, Simulation | WorkItem)
        result = {}
        for path in [f.strip() for f in files.split(",") if f.strip()]:
            result[path] = await session.outputs.tail(entity, path, nbytes)
    if as_json:
        emit(result, True, "")
        return
    for path, text in result.items():
        click.echo(click.style(f"==> {path} <==", bold=True))
        click.echo(text)


# --- download ----------------------------------------------------------------------------------


@cli.command()
@click.argument(
    "entity_type", type=click.Choice(["simulation", "experiment", "workitem"], case_sensitive=False)
)
@click.argument("entity_id")
@click.argument("patterns", nargs=-1, required=True)
@click.option(
    "--dest", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True
)
@click.option("--overwrite", is_flag=True, help="Fetch files that are already complete.")
@click.option("--case-sensitive", is_flag=True, help="Match patterns case-sensitively.")
@connection_options
@run_async
async def download(
    entity_type: str,
    entity_id: str,
    patterns: tuple[str, ...],
    dest: Path,
    overwrite: bool,
    case_sensitive: bool,
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """Download outputs matching glob PATTERNS to DEST/<entity-id>/<path>."""
    async with open_session(server, token, username) as session:
        entity = await _resolve(session, entity_type, entity_id)
        if isinstance(entity, Experiment):
            source: Any = entity.id
            total = sum((await session.experiments.stats(entity)).values())
            root = dest / str(entity.id)
        else:
            source = [entity]
            total = 1
            root = dest
        landed: list[dict[str, Any]] = []
        id_key = "work_item_id" if isinstance(entity, WorkItem) else "simulation_id"
        errors = 0
        with count_progress() as bar:
            task = bar.add_task("files", total=None)
            harvest = session.outputs.harvest(
                source, list(patterns), root, overwrite=overwrite, case_sensitive=case_sensitive
            )
            async for got in harvest:
                # The total grows as simulations are listed; known once all of them are.
                listed_all = harvest.simulations_listed >= total
                bar.update(task, total=harvest.files_matched if listed_all else None)
                bar.advance(task)
                if got.ok:
                    landed.append(
                        {
                            id_key: str(got.simulation_id),
                            "path": got.path,
                            "local_path": str(got.local_path),
                            "size": got.size,
                            "skipped": got.skipped,
                        }
                    )
                else:
                    errors += 1
                    console.print(f"[red]{got.simulation_id}: {escape(str(got.error))}[/]")
    if not landed and not errors:
        raise click.ClickException(
            f"no output matched {' '.join(patterns)} in {total} simulation(s); "
            "patterns are globs on paths such as output/InsetChart.json"
        )
    emit(
        {"files": landed, "errors": errors, "simulations": total},
        as_json,
        f"{len(landed)} files in {root} ({sum(f['skipped'] for f in landed)} already there), "
        f"{errors} errors",
    )
    if errors:
        raise SystemExit(1)


# --- create-asset-collection -------------------------------------------------------------------


@cli.command("create-asset-collection")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", "-n", help="Tag Name of the collection.")
@click.option("--include", multiple=True, default=("*",), show_default=True)
@click.option("--exclude", multiple=True, default=DEFAULT_EXCLUDE, show_default=True)
@connection_options
@run_async
async def create_asset_collection(
    directory: Path,
    name: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """Create an asset collection from DIRECTORY, uploading only what COMPS lacks."""
    files = await anyio.to_thread.run_sync(files_from_dir, directory, include, exclude)
    default_name = (await anyio.Path(directory).resolve()).name
    marked = [
        AssetCollectionFile.from_path(
            f.source.path, relative_path=f.relative_path, tags={"Executable": None}
        )
        if f.file_name.lower().endswith(".exe") and f.source and f.source.path
        else f
        for f in files
    ]  # as pyCOMPS's createac does
    async with open_session(server, token, username) as session:
        with bytes_progress() as bar:
            task = bar.add_task("upload", total=None)
            collection = await session.asset_collections.create(
                marked,
                tags={"Name": name or default_name},
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    emit(
        {"asset_collection_id": str(collection.id), "files": len(files)},
        as_json,
        str(collection.id),
    )


# --- clone-simulation and rerun-failed ---------------------------------------------------------


@cli.command("clone-simulation")
@click.argument("simulation_id")
@click.option("--experiment-id", "-e", help="Put the clone here (default: the same experiment).")
@connection_options
@run_async
async def clone_simulation(
    simulation_id: str,
    experiment_id: str | None,
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """Copy a simulation (configuration, tags, files by md5)."""
    async with open_session(server, token, username) as session:
        clone = await session.simulations.clone(simulation_id, experiment=experiment_id)
    emit(
        {"simulation_id": str(clone.id), "experiment_id": str(clone.experiment_id)},
        as_json,
        str(clone.id),
    )


@cli.command("rerun-failed")
@click.argument("experiment_id")
@click.option("--create-only", is_flag=True, help="Create the clones but do not commission.")
@click.option("--delete-old", is_flag=True, help="Delete the failed ones (default: tag them).")
@connection_options
@run_async
async def rerun_failed(
    experiment_id: str,
    create_only: bool,
    delete_old: bool,
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """Clone the failed simulations of an experiment, commission them, retire the old ones."""
    async with open_session(server, token, username) as session:
        experiment = await session.experiments.get(experiment_id)
        with count_progress() as bar:
            task = bar.add_task("clone", total=None)
            rerun = await session.simulations.rerun_failed(
                experiment,
                commission=not create_only,
                delete_old=delete_old,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    emit(
        {"rerun": [str(c.id) for c in rerun.clones], "old": [str(s.id) for s in rerun.retired]},
        as_json,
        f"{len(rerun.clones)} failed simulations cloned"
        + ("" if create_only or not rerun.clones else " and commissioned"),
    )


# --- cleanup -----------------------------------------------------------------------------------


@cli.command()
@click.argument(
    "entity_type", type=click.Choice(["suite", "experiment", "simulation"], case_sensitive=False)
)
@click.option("--owner", help="Only this owner's (default: yours).")
@click.option("--older-than", type=click.FloatRange(0), default=None, metavar="DAYS")
@click.option("--name-contains", default=None)
@click.option("--execute", is_flag=True, help="Really delete (default: a dry run).")
@click.option("--expire-now", is_flag=True, help="Make deletion permanent sooner.")
@connection_options
@run_async
async def cleanup(
    entity_type: str,
    owner: str | None,
    older_than: float | None,
    name_contains: str | None,
    execute: bool,
    expire_now: bool,
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """Delete suites/experiments/simulations by owner, age and name (dry run by default)."""
    async with open_session(server, token, username) as session:
        filters = [f"owner={owner or await _current_user(session)}"]
        if older_than is not None:
            cutoff = datetime.now(UTC) - timedelta(days=older_than)
            filters.append(f"date_created<{cutoff:%Y-%m-%dT%H:%M:%S}")
        if name_contains:
            filters.append(f"name~{name_contains}")
        resource = _stateful(session, entity_type)
        found = await resource.list(Query().select(["id", "name", "date_created"]).where(filters))
        if execute and found:
            await resource.delete(found, expire_now=expire_now)
    rows = [{"id": str(e.id), "name": e.name, "date_created": str(e.date_created)} for e in found]
    if as_json:
        emit({"deleted" if execute else "would_delete": rows}, True, "")
        return
    table = Table(
        title=("deleted" if execute else "dry run: would delete") + f" {len(rows)} {entity_type}(s)"
    )
    table.add_column("id", no_wrap=True, min_width=36)  # never cut: ids are copied from here
    table.add_column("name", overflow="fold")
    table.add_column("date_created", no_wrap=True)
    for row in rows:
        table.add_row(row["id"], escape(str(row["name"])), row["date_created"])
    console.print(table)
    if not execute and rows:
        console.print("pass --execute to delete them")


# --- chart -------------------------------------------------------------------------------------


@cli.command()
@click.argument("experiment_id")
@click.option("--channel", default="Infected", show_default=True)
@click.option("--file", "chart_file", default="output/InsetChart.json", show_default=True)
@click.option("--by-tag", default=None, help="Colour lines by this numeric tag.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG to write (default: <experiment-id>-<channel>.png).",
)
@connection_options
@run_async
async def chart(
    experiment_id: str,
    channel: str,
    chart_file: str,
    by_tag: str | None,
    out: Path | None,
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """Multi-chart of one InsetChart channel across an experiment's simulations."""
    out = out or Path(f"{experiment_id}-{channel.replace(' ', '_')}.png")
    series: list[tuple[str, float, list[float]]] = []
    async with open_session(server, token, username) as session:
        experiment = await session.experiments.get(experiment_id)
        sims = {
            s.id: s
            for s in await session.experiments.simulations(
                experiment, Query().select(["id", "name"]).select_children(["tags"])
            )
        }
        with tempfile.TemporaryDirectory(prefix="comps-chart-") as scratch, count_progress() as bar:
            task = bar.add_task(f"harvest {chart_file}", total=len(sims))
            async for got in session.outputs.harvest(experiment, [chart_file], Path(scratch)):
                bar.advance(task)
                if not got.ok or got.local_path is None:
                    continue
                data = await anyio.to_thread.run_sync(read_channel, got.local_path, channel)
                sim = sims[got.simulation_id]
                value = _number((sim.tags or {}).get(by_tag)) if by_tag else 0.0
                series.append((str(sim.name), value, data))
    if not series:
        raise click.ClickException(f"no {chart_file} found in experiment {experiment_id}")
    try:
        await anyio.to_thread.run_sync(
            write_multichart,
            sorted(series, key=lambda s: s[1]),
            channel,
            out,
            str(experiment.name),
            by_tag or "",
        )
    except RuntimeError as exc:  # matplotlib missing: say how to install it, no traceback
        raise click.ClickException(str(exc)) from None
    emit(
        {"chart": str(out), "simulations": len(series)},
        as_json,
        f"{len(series)} simulations -> {out}",
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


# --- whoami ------------------------------------------------------------------------------------


@cli.command()
@connection_options
@run_async
async def whoami(
    server: str | None, token: str | None, username: str | None, as_json: bool
) -> None:
    """Who the token belongs to, from the server (pyCOMPS's getuser)."""
    async with open_session(server, token, username) as session:
        user = await _current_user(session)
        response = await session.request("GET", "users", params={"format": "json"})
        users = [u for u in json_list(response, "Users") if u.get("UserName") == user]
        environments = await session.environments()
    info = {"user": user, "details": users[0] if users else None, "environments": environments}
    emit(info, as_json, f"{user} (environments: {', '.join(environments) or 'none'})")


# --- doctor --------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--write",
    is_flag=True,
    help="Also create and delete one small suite (tag filters, partial updates).",
)
@connection_options
@run_async
async def doctor(
    write: bool, server: str | None, token: str | None, username: str | None, as_json: bool
) -> None:
    """Measure what this COMPS host does where the SDK would otherwise infer it (PROTOCOL.md),
    and remember it beside the token cache so later sessions adapt. Read-only unless --write."""
    async with open_session(server, token, username) as session:
        found = await diagnose(session, write=write)
    if as_json:
        emit(asdict(found), True, "")
        return
    table = Table(title=f"COMPS behaviour of {found.host}")
    for column in ("probe", "answer", "what the SDK does"):
        table.add_column(column)
    for row in describe(found):
        table.add_row(*row)
    Console().print(table)
    for note in found.notes:
        console.print(f"note: {escape(note)}")
    console.print(f"recorded in {escape(str(session.capabilities_file))}")


# --- analyze -----------------------------------------------------------------------------------


def _load_analyzer(spec: str) -> Analyzer:
    """``module:Class`` (or ``path/to/file.py:Class``) -> an instance of that Analyzer."""
    module_name, sep, class_name = spec.rpartition(":")
    if not sep or not module_name or not class_name:
        raise click.BadParameter(f"{spec!r} is not module:Class", param_hint="ANALYZER")
    if module_name.endswith(".py"):
        location = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
        if location is None or location.loader is None:
            raise click.BadParameter(f"cannot load {module_name}", param_hint="ANALYZER")
        module = importlib.util.module_from_spec(location)
        sys.modules[location.name] = module  # a process pool finds its classes by module
        location.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Analyzer):
        raise click.BadParameter(f"{spec} is not an Analyzer subclass", param_hint="ANALYZER")
    return cls()


@cli.command()
@click.argument("experiment_id")
@click.argument("analyzer_specs", nargs=-1, required=True, metavar="ANALYZER...")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep map results here; a re-run maps only what is new.",
)
@click.option(
    "--processes",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Map in N processes (default: worker threads).",
)
@click.option(
    "--window",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Items in flight at once (bounds memory).",
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first failure.")
@connection_options
@run_async
async def analyze(
    experiment_id: str,
    analyzer_specs: tuple[str, ...],
    cache: Path | None,
    processes: int | None,
    window: int,
    fail_fast: bool,
    server: str | None,
    token: str | None,
    username: str | None,
    as_json: bool,
) -> None:
    """Run ANALYZER(s) (module:Class) over an experiment's outputs; print each reduce."""
    analyzers = [_load_analyzer(spec) for spec in analyzer_specs]
    pool = ProcessPoolExecutor(processes) if processes else None
    try:
        async with open_session(server, token, username) as session:
            experiment = await _resolve(session, "experiment", experiment_id)
            assert isinstance(experiment, Experiment)
            with count_progress() as bar:
                task = bar.add_task("items", total=None)
                report = await session.analyze(
                    experiment,
                    analyzers,
                    executor=pool,
                    window=window,
                    cache_dir=cache,
                    fail_fast=fail_fast,
                    on_item=lambda _: bar.advance(task),
                )
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    for failure in report.failures:
        console.print(f"[yellow]{escape(str(failure))}[/]")
    lines = [f"{name}: {result}" for name, result in report.reduced.items()]
    lines.append(
        f"{report.items} items, {len(report.failures)} failures, {report.cached} from the cache"
    )
    emit(
        {
            "reduced": report.reduced,
            "items": report.items,
            "cached": report.cached,
            "failures": [str(f) for f in report.failures],
        },
        as_json,
        "\n".join(lines),
    )
