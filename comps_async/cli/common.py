"""What the client commands share: connection options, entity types, progress bars."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from .._session import Session

__all__ = [
    "ENTITY_TYPES",
    "bytes_progress",
    "connection_options",
    "console",
    "count_progress",
    "open_session",
]

F = TypeVar("F", bound=Callable[..., Any])

ENTITY_TYPES = click.Choice(["simulation", "experiment", "suite", "workitem"], case_sensitive=False)

console = Console(stderr=True)  # progress and chatter on stderr, results on stdout


def connection_options(fn: F) -> F:
    """--server/--token/--username options (env: COMPS_SERVER, COMPS_TOKEN, COMPS_USERNAME)."""

    @click.option(
        "--server",
        "-s",
        envvar="COMPS_SERVER",
        metavar="URL",
        help="COMPS host, e.g. https://comps.idmod.org [env COMPS_SERVER].",
    )
    @click.option("--token", envvar="COMPS_TOKEN", metavar="TOKEN", help="[env COMPS_TOKEN]")
    @click.option(
        "--username",
        "-u",
        envvar="COMPS_USERNAME",
        help="Log in as this user (password from COMPS_PASSWORD or a prompt).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def open_session(server: str | None, token: str | None, username: str | None) -> Session:
    """A Session from the command-line options; asks for a password when needed."""
    if not server:
        raise click.UsageError("no server: pass --server or set COMPS_SERVER")
    password = None
    if username and not token:
        import os

        password = os.environ.get("COMPS_PASSWORD") or click.prompt(
            f"Password for {username}", hide_input=True, err=True
        )
    return Session(server, token=token, username=username, password=password)


def count_progress() -> Progress:
    """A bar that counts things (simulations, files)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def bytes_progress() -> Progress:
    """A bar that counts bytes, with speed."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=console,
    )
