"""Every public name has a docstring; the package is typed."""

from __future__ import annotations

import inspect
from pathlib import Path

import comps_async as ca
from comps_async import resources
from comps_async.local import LocalComps
from comps_async.sync import Session as SyncSession


def public_members(obj: object) -> list[tuple[str, object]]:
    return [
        (name, member)
        for name, member in inspect.getmembers(obj)
        if not name.startswith("_")
        and (inspect.isfunction(member) or inspect.iscoroutinefunction(member))
    ]


def test_public_names_have_docstrings() -> None:
    values = {name: getattr(ca, name) for name in ca.__all__}
    missing = [
        name
        for name, value in values.items()
        if not (value.__doc__ or "").strip()
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


def test_package_is_typed() -> None:
    assert (Path(ca.__file__).parent / "py.typed").exists()
