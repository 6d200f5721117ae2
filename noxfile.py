"""Developer sessions: ``nox -s tests lint typecheck bench``."""

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
    session.run("ruff", "check", "comps_async", "tests", "benchmarks", "examples", "noxfile.py")
    session.run(
        "ruff", "format", "--check", "comps_async", "tests", "benchmarks", "examples", "noxfile.py"
    )


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package (with every optional import it type-checks)."""
    session.install("-e", ".[dev]")
    session.run("mypy")


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
