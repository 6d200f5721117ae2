"""The path rules that keep server-provided names inside the destination directory: no
absolute paths, drive letters, ``..``, NUL, or the SDK's scratch folder; no symlink on the way
out of the destination; zip members checked the same way before anything is extracted."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import CompsError

__all__ = [
    "SCRATCH_DIR",
    "UnsafePathError",
    "ensure_inside",
    "extract_zip_safely",
    "safe_join",
]

_DRIVE = re.compile(r"^[A-Za-z]:")
SCRATCH_DIR = ".comps-partial"  # (scratch.py) no output may be written into it


class UnsafePathError(CompsError, ValueError):
    """A server-provided path would land outside the destination directory (or onto the SDK's
    scratch space in it); nothing was written there."""


def safe_join(root: Path, relative: str) -> Path:
    """``root/relative`` for a server-provided ``relative`` path, refusing absolute paths, drive
    letters, ``..`` and anything else that leaves ``root`` (zip-slip, hostile listings). Pure
    string work, safe on the event loop; ``ensure_inside`` adds the symlink check on disk."""
    text = relative.replace("\\", "/")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or text.startswith("/") or _DRIVE.match(text) or ".." in parts or "\x00" in text:
        raise UnsafePathError(f"refusing to write {relative!r}: it leaves the destination")
    if parts[0].casefold() == SCRATCH_DIR:
        raise UnsafePathError(f"refusing to write {relative!r}: {SCRATCH_DIR} is the SDK's")
    return root.joinpath(*parts)


def ensure_inside(root: Path, target: Path) -> None:
    """Blocking: refuse ``target`` if, through symlinks already on disk, it lands outside
    ``root``."""
    resolved_root = root.resolve()
    resolved = target.resolve()
    if not resolved.is_relative_to(resolved_root) or resolved == resolved_root:
        raise UnsafePathError(f"refusing to write {str(target)!r}: it leaves the destination")


def extract_zip_safely(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip, refusing members whose names leave ``dest`` (blocking; run in a thread)."""
    written = []
    with zipfile.ZipFile(archive) as zipped:
        members = [
            (info, _checked(dest, info.filename)) for info in zipped.infolist() if not info.is_dir()
        ]  # check every name before writing anything
        for info, target in members:
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(info) as source, open(target, "wb") as out:
                while block := source.read(1 << 20):
                    out.write(block)
            written.append(target)
    return written


def _checked(root: Path, relative: str) -> Path:
    target = safe_join(root, relative)
    ensure_inside(root, target)
    return target
