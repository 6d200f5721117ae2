"""MkDocs hook: files the site shows that live outside ``docs/`` (the benchmark charts beside
the scripts that draw them), added to the build from where they are, so nothing is copied by
hand and nothing goes stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
# site path -> file in the repository
EXTERNAL = {"reference/scale.png": ROOT / "benchmarks" / "scale.png"}


def on_files(files: Files, config: Any) -> Files:
    for uri, source in EXTERNAL.items():
        files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files
