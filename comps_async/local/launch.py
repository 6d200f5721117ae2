"""How the local server starts a job's command, and the environment a job runs in.

Everything here is inferred from what clients expect of COMPS's workers (PROTOCOL.md rows
17-18), kept in this one module:

- **What runs.** A ``WorkOrder`` file (idmtools' scheduling attaches ``WorkOrder.json`` with a
  top-level ``Command``; work items carry ``Execution.Command``) wins over the Configuration's
  ``ExecutablePath`` + ``SimulationInputArgs``. The command is split as a POSIX shell would and
  run directly (no shell in between).
- **How it starts.** ``python``/``python3`` mean the server's own interpreter (so the built-in
  model runs without any install), and that interpreter's directory leads ``PATH``, so a script
  that calls ``python3`` gets it too. Assets behave as on COMPS's shares, where every file can
  be executed; a script without a ``#!`` line is run by ``/bin/sh``, as a shell runs it.
- **The worker's environment.** ``COMPS_SERVER``, ``COMPS_ENVIRONMENT``, the entity's id
  (``COMPS_WORKITEM_GUID`` / ``COMPS_SIMULATION_GUID`` and ``COMPS_EXPERIMENT_GUID``), a token
  of the job's owner both as ``COMPS_TOKEN`` and in a private token cache
  (``XDG_RUNTIME_DIR``, the file pyCOMPS and comps_async read), so code inside a job logs back
  in to this server without a prompt; plus the work order's ``Environment`` variables.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PYTHON_NAMES",
    "Launch",
    "StartError",
    "command_of",
    "interpreted",
    "job_environment",
    "token_cache_file",
    "without_shebang",
    "work_order",
]

PYTHON_NAMES = frozenset({"python", "python3", "python.exe"})


class StartError(Exception):
    """The job's command cannot be started; the message says why (it goes to the job's
    ``ErrorMessage`` and to its ``stderr.txt``)."""


@dataclass(frozen=True)
class Launch:
    """A command to run in a working directory, and what the job adds to its environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def work_order(files: list[tuple[str, dict[str, Any]]], workdir: Path) -> dict[str, Any] | None:
    """The job's work order: the materialised file of type ``WorkOrder`` (or named
    ``WorkOrder.json``), parsed; None when the job has none."""
    names = [doc["FileName"] for _, doc in files if str(doc.get("FileType")) == "WorkOrder"]
    names.append("WorkOrder.json")
    for name in names:
        path = workdir / name
        if path.is_file():
            try:
                order = json.loads(path.read_text(encoding="utf-8-sig"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise StartError(f"{name} is not valid JSON: {exc}") from None
            if not isinstance(order, dict):
                raise StartError(f"{name} must hold a JSON object")
            return order
    return None


def command_of(order: Mapping[str, Any] | None, config: Mapping[str, Any] | None) -> Launch:
    """What a job runs: its work order's command, else its Configuration's executable."""
    if order is not None:
        raw = order.get("Execution")
        execution: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        text = order.get("Command") or execution.get("Command")
        if not text or not isinstance(text, str):
            raise StartError("the work order has no Command (nor Execution.Command)")
        variables = order.get("Environment") or execution.get("Environment") or {}
        if not isinstance(variables, dict):
            raise StartError("the work order's Environment must be an object of names to values")
        return Launch(_split(text), {str(k): str(v) for k, v in variables.items()})
    executable = (config or {}).get("ExecutablePath")
    if not executable:
        raise StartError(
            "the effective Configuration names no ExecutablePath and the simulation has no "
            "WorkOrder.json"
        )
    args = (config or {}).get("SimulationInputArgs") or ""
    return Launch([str(executable), *_split(str(args), empty_ok=True)])


def _split(text: str, *, empty_ok: bool = False) -> list[str]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise StartError(f"cannot parse the command {text!r}: {exc}") from None
    if not argv and not empty_ok:
        raise StartError("the command is empty")
    return argv


def interpreted(argv: list[str], workdir: Path) -> list[str]:
    """``argv`` as it is executed: python names become this interpreter, and a program in the
    working directory is named by its path there."""
    program, *rest = argv
    if program in PYTHON_NAMES:
        return [sys.executable, *rest]
    if not os.path.isabs(program) and (workdir / program).exists():
        return [str(workdir / program), *rest]
    return argv


def without_shebang(argv: list[str], error: OSError) -> list[str] | None:
    """A script without ``#!`` cannot be exec'd (ENOEXEC); a shell runs it with ``/bin/sh``,
    and so do we. None for any other start failure."""
    if error.errno != errno.ENOEXEC:
        return None
    return ["/bin/sh", *argv]


def job_environment(
    *,
    server_url: str,
    environment: str,
    ids: Mapping[str, str],
    token: str,
    runtime_dir: Path,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The variables a job adds to the server's environment (see the module docstring)."""
    runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cache = runtime_dir / token_cache_file(server_url)
    fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    interpreter_dir = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([interpreter_dir, os.environ.get("PATH", os.defpath)]),
        "COMPS_SERVER": server_url,
        "COMPS_ENVIRONMENT": environment,
        "COMPS_TOKEN": token,
        "XDG_RUNTIME_DIR": str(runtime_dir),
        **ids,
        **extra,
    }


def token_cache_file(server_url: str) -> str:
    """pyCOMPS's token cache name for a host (``COMPS_Authtoken_<host>_<user>.txt``), which
    comps_async shares."""
    host = "".join("_" if c in ":/" else c for c in server_url.rstrip("/"))
    return f"COMPS_Authtoken_{host}_{getpass.getuser()}.txt"
