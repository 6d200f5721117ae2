"""``comps-async``: click commands over the async SDK (anyio underneath).

Exit codes: 0 success, 1 a COMPS/operation error, 2 bad usage or input, 130 interrupted.
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio
import click

from ..errors import CompsError

__all__ = ["main"]

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def run_async(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command body with anyio and turn errors into one-line messages."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return anyio.run(functools.partial(fn, *args, **kwargs))
        except KeyboardInterrupt:
            raise SystemExit(EXIT_INTERRUPTED) from None
        except (CompsError, ValueError, TypeError, OSError) as exc:
            if debug:
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            click.echo(f"error: {message}", err=True)
            code = EXIT_ERROR if isinstance(exc, CompsError) else EXIT_USAGE
            raise SystemExit(code) from None

    return wrapper


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print ``data`` as JSON for scripts, or ``text`` for people."""
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="comps-async")
def cli(debug: bool) -> None:
    """Async, high-throughput client and local server for COMPS."""


def _register() -> None:
    from . import commands, demo, serve  # noqa: F401  (commands attach themselves to ``cli``)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _register()
    cli.main(args=argv, prog_name="comps-async", standalone_mode=True)
