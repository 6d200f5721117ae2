"""Developer sessions: ``nox -s tests lint typecheck docs bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (asyncio and trio) against the local server, as CI runs it (the chart
    tests need matplotlib, the oracle tests pyCOMPS and idmtools)."""
    session.install("-e", ".[dev]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.5")
    paths = ("comps_async", "tests", "benchmarks", "examples", "noxfile.py", "docs/hooks.py")
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package (with every optional import it type-checks)."""
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly as CI builds it (``site/``); ``nox -s docs --
    serve`` serves it on http://127.0.0.1:8000 and rebuilds as you edit."""
    session.install("-e", ".[docs]")
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "--strict", "--dev-addr", "127.0.0.1:8000")
    else:
        session.run("mkdocs", "build", "--strict")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; each prints its figures as JSON."""
    session.install("-e", ".[charts,interop]")
    for script in (
        "bench_server.py",
        "bench_transport.py",
        "bench_upload.py",
        "bench_harvest.py",
        "bench_wait.py",
        "bench_save.py",
        "bench_analyze.py",
        "bench_idmtools.py",
        "bench_scale.py",
    ):
        session.run("python", f"benchmarks/{script}", *session.posargs)
