"""The seams, checked from the imports themselves (``TYPE_CHECKING`` ones included): every module
imports only from its own layer or the ones below, so the SDK has no import cycle between
layers, no engine or resource sees the Session, and the local server is a component of its own
that takes nothing from the SDK but its public wire models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "comps_async"

# Lowest first. A module may import from its own layer and any layer below it.
LAYERS: list[tuple[str, ...]] = [
    (  # the vocabulary: wire models, errors, hosts, the pipeline's protocol, small helpers
        "_constants",
        "_capabilities",
        "errors",
        "_failures",
        "models",
        "pipeline",
        "_concurrency",
        "_responses",
        "_query",
        "_hosts",
    ),
    ("auth", "policies", "_transports"),  # what a request passes through
    ("_requester",),  # the request layer
    ("_transfer",),  # engines: given the requester and explicit collaborators
    ("_resources", "_waiting", "analyze"),  # operations on entities, over engines
    ("_session",),  # wires it all together for one host
    ("sync", "doctor", "testing", "cli", "idmtools", "__init__"),  # what stands on a Session
]
LOCAL_MAY_IMPORT = ("models",)  # the local server's only door into the SDK


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    """The comps_async modules ``path`` imports, as dotted names below the package."""
    tree = ast.parse(path.read_text())
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.startswith("comps_async"):
                target = node.module.split(".")[1:]
            else:
                continue
            if node.module is None:  # from . import x
                found.update(".".join([*target, alias.name]) for alias in node.names)
            else:
                found.add(".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("comps_async."):
                    found.add(alias.name.split(".", 1)[1])
    return {name for name in found if name}


def _layer(module: str) -> int:
    top = module.split(".")[0] or "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"comps_async.{module} is in no layer: add it to LAYERS")


SDK_FILES = sorted(p for p in PACKAGE.rglob("*.py") if "local" not in p.relative_to(PACKAGE).parts)
LOCAL_FILES = sorted((PACKAGE / "local").rglob("*.py"))


@pytest.mark.parametrize("path", SDK_FILES, ids=lambda p: _module_name(p))
def test_each_module_imports_only_its_layer_and_below(path: Path) -> None:
    module = _module_name(path)
    if module == "__init__":
        return  # the public surface re-exports from every layer
    mine = _layer(module)
    upward = sorted(
        target
        for target in _imports(path)
        if not target.startswith("local") and _layer(target) > mine
    )
    assert not upward, f"comps_async.{module} (layer {mine}) imports from above: {upward}"


@pytest.mark.parametrize("path", LOCAL_FILES, ids=lambda p: _module_name(p))
def test_the_local_server_takes_only_the_public_models_from_the_sdk(path: Path) -> None:
    outside = sorted(
        target
        for target in _imports(path)
        if not target.startswith("local") and not target.startswith(LOCAL_MAY_IMPORT)
    )
    assert not outside, f"comps_async.{_module_name(path)} imports SDK internals: {outside}"


def test_the_checks_see_an_upward_import(tmp_path: Path) -> None:
    """The import reader finds relative, absolute and TYPE_CHECKING imports."""
    probe = PACKAGE / "_transfer" / "upload.py"
    found = _imports(probe)
    assert "_requester" in found  # under TYPE_CHECKING
    assert "errors" in found and "_transfer.budget" in found
    assert _layer("_session") > _layer("_transfer.upload")
