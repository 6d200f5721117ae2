"""Every public name has a docstring; the package is typed."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import comps_async as ca
from comps_async import _resources as resources  # the classes behind Session.suites etc.
from comps_async._resources.outputs import Outputs
from comps_async.local import LocalComps
from comps_async.sync import Session as SyncSession


def public_members(obj: object) -> list[tuple[str, object]]:
    return [
        (name, member)
        for name, member in inspect.getmembers(obj)
        if not name.startswith("_")
        and (inspect.isfunction(member) or inspect.iscoroutinefunction(member))
    ]


def written_doc(value: object) -> str:
    """The docstring someone wrote: a dataclass without one gets its signature as __doc__."""
    doc = (getattr(value, "__doc__", None) or "").strip()
    if dataclasses.is_dataclass(value) and doc.startswith(f"{getattr(value, '__name__', '')}("):
        return ""
    return doc


def test_public_names_have_docstrings() -> None:
    values = {name: getattr(ca, name) for name in ca.__all__}
    missing = [
        name
        for name, value in values.items()
        if not written_doc(value)
        and not isinstance(value, str)
        and not hasattr(value, "__origin__")  # type aliases such as CallNext
    ]
    assert missing == []
    classes = [
        ca.Session,
        SyncSession,
        LocalComps,
        ca.Query,
        ca.RetryPolicy,
        *(getattr(resources, n) for n in resources.__all__ if n[0].isupper()),
    ]
    undocumented = [
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, member in public_members(cls)
        if not (member.__doc__ or "").strip()
    ]
    assert undocumented == []


def _defined_in_the_sdk() -> set[str]:
    """Names of the classes and module-level aliases the SDK defines (not the local server)."""
    package = Path(ca.__file__).parent
    names: set[str] = set()
    for source in package.rglob("*.py"):
        if "local" in source.relative_to(package).parts:
            continue
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                value = node.value
                if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "TypeVar":
                    continue  # a type variable names no type of its own
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def test_public_signatures_use_only_exported_names() -> None:
    """A type a public method takes or returns can be imported and named by the caller: every
    name of the SDK's own in a public signature is exported (``comps_async``,
    ``comps_async.models`` or ``comps_async.analyze``), or it is a resource class reached
    through the session."""
    ours = _defined_in_the_sdk()
    exported = set(ca.__all__) | set(ca.models.__all__) | set(ca.analyze.__all__)
    reached = {n for n in resources.__all__ if inspect.isclass(getattr(resources, n))}
    reached.add("Outputs")
    owners = [
        ca.Session,
        ca.Harvest,
        ca.Analysis,
        *(getattr(resources, n) for n in reached if n != "Outputs"),
        Outputs,
    ]
    unexported = sorted(
        {
            f"{ident} (in {owner.__name__}.{name})"
            for owner in owners
            for name, member in public_members(owner)
            for annotation in member.__annotations__.values()
            for ident in re.findall(r"[A-Za-z_]\w*", str(annotation))
            if ident in ours and ident not in exported | reached
        }
    )
    assert unexported == []


def test_what_every_session_installs_is_not_offered_again() -> None:
    """Auth, the concurrency limit and logging are in every Session's pipeline: they are not
    exported, so no one passes them in ``policies=`` and applies them twice."""
    for name in ("AuthPolicy", "ConcurrencyPolicy", "LoggingPolicy"):
        assert not hasattr(ca, name) and not hasattr(ca.policies, name)


def test_package_is_typed() -> None:
    assert (Path(ca.__file__).parent / "py.typed").exists()


def test_the_pytest_plugin_does_not_import_the_server() -> None:
    """Every pytest run of everyone who installs the SDK loads the plugin: it must not import
    Starlette and uvicorn until a test asks for ``comps_server``."""
    check = (
        "import sys, comps_async.testing; "
        "assert not {'starlette', 'uvicorn'} & set(sys.modules), sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-500:]


def test_the_version_is_single_sourced() -> None:
    """One version number: ``comps_async.__version__``, which the build reads (hatch) into the
    package metadata that pip and ``importlib.metadata`` see; the pyproject holds none."""
    import importlib.metadata
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert importlib.metadata.version("comps-async") == ca.__version__


def test_every_protocol_section_the_code_cites_is_in_protocol_md() -> None:
    """Comments cite the protocol by section (``§8.2``); PROTOCOL.md, in this repository, says
    what each cited section is, so a citation can be followed."""
    package = Path(ca.__file__).parent
    cited = {
        match.split(".")[0]
        for source in package.rglob("*.py")
        for match in re.findall(r"§(\d+(?:\.\d+)?)", source.read_text())
    }
    table = (package.parent / "PROTOCOL.md").read_text().split("## The sections the code cites")[1]
    listed = set(re.findall(r"^\| (\d+)\b", table, re.MULTILINE))
    assert cited and cited <= listed, sorted(cited - listed)
