"""``comps-async serve``: run the local COMPS server in the foreground."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

import click

from ..local import Compat, FaultConfig, LocalComps
from .main import cli


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("comps-data"),
    show_default=True,
    help="Where the database, blobs and working directories live.",
)
@click.option("--port", type=int, default=8100, show_default=True, help="0 picks a free port.")
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="NAME:PASSWORD",
    help="Create or update a user (repeatable).",
)
@click.option("--max-runs", type=int, default=None, help="Concurrent simulations (CPU count).")
@click.option(
    "--profile",
    type=click.Choice(["loopback", "wan"]),
    default="loopback",
    show_default=True,
    help="wan: emulate a COMPS far away (80 ms per request, 20 MB/s per connection each way, "
    "200 MB/s in all).",
)
@click.option(
    "--environment",
    "environments",
    multiple=True,
    metavar="NAME",
    help="Offer only these environments (repeatable) and refuse any other, as COMPS does "
    "(default: accept every name, so an ini block written for Calculon runs here).",
)
def serve(
    data_dir: Path,
    port: int,
    users: tuple[str, ...],
    max_runs: int | None,
    profile: str,
    environments: tuple[str, ...],
) -> None:
    """Serve a COMPS-compatible API on 127.0.0.1 until Ctrl-C."""
    accounts = {}
    for entry in users:
        name, sep, password = entry.partition(":")
        if not sep or not name or not password:
            raise click.BadParameter(f"{entry!r} is not NAME:PASSWORD", param_hint="--user")
        accounts[name] = password
    if port:
        _check_port_free(port)  # before anything is created: no data dir, no user, no password
    server = LocalComps(
        data_dir,
        port=port,
        users=accounts,
        max_concurrent_runs=max_runs,
        faults=FaultConfig.wan() if profile == "wan" else None,
        compat=Compat(environments=environments),
    )
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        raise click.ClickException(f"the server did not start: {exc}") from None
    try:
        click.echo(f"COMPS local server at {server.url} (data in {server.data_dir})")
        if server.initial_password:
            click.echo(f"user 'local', password (shown once): {server.initial_password}")
        click.echo(f"token: {server.token}")
        # In the fragment: browsers never send it, so the token stays out of access logs.
        click.echo(f"dashboard: {server.url}/dashboard#token={server.token}")
        click.echo(f"export COMPS_SERVER={server.url} COMPS_TOKEN='{server.token}'")
        click.echo("Ctrl-C to stop.", err=True)
        _wait_forever()
    except KeyboardInterrupt:
        click.echo("stopping", err=True)
    finally:
        server.stop()


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a server that just died (a restart on
        # the same port) is free; only a socket listening there is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise click.ClickException(
                f"port {port} on 127.0.0.1 is in use ({exc.strerror}); pick another with "
                "--port, or --port 0 for a free one"
            ) from None


def _wait_forever() -> None:
    """Block until Ctrl-C or SIGTERM (how service managers and CI stop a server)."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    threading.Event().wait()
