"""The scratch files of downloads (blocking system calls, run in worker threads).

Scratch files never share a folder with outputs: they live in ``<dest>/.comps-partial/``, named
by a hash of the target's path, length and md5, so no output name (``X.part`` included) can
collide with one and a resumed transfer only ever continues the same listed file. They are
created exclusively and opened without following links, so a link planted in the destination
cannot redirect a write, and a publish re-checks what it replaces.
"""

from __future__ import annotations

import hashlib
import os
import stat
from contextlib import suppress
from pathlib import Path

from .paths import SCRATCH_DIR, UnsafePathError, ensure_inside

__all__ = [
    "create_empty",
    "discard",
    "open_for",
    "prepare",
    "publish",
    "record_range",
    "scratch_path",
    "size_of",
    "start_ranges",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; Windows has no symlink writes to follow


def scratch_path(root: Path, target: Path, length: int | None, md5_hex: str | None) -> Path:
    """Where the bytes of ``target`` gather until they are verified: in the destination's
    scratch folder, named by the target's path, length and md5 (a changed listing never resumes
    the old bytes)."""
    relative = target.relative_to(root).as_posix() if target.is_relative_to(root) else str(target)
    name = hashlib.sha256(f"{relative}\0{length}\0{md5_hex}".encode()).hexdigest()[:40]
    return root / SCRATCH_DIR / f"{name}.part"


def _done_file(part: Path) -> Path:
    return part.with_name(part.name + ".ranges")


def prepare(
    target: Path, part: Path, length: int | None, overwrite: bool, root: Path
) -> int | None:
    """Blocking: None when a complete ``target`` is already there; otherwise make its folder
    and the scratch folder, and return how many bytes of ``part`` a resumed transfer can keep
    (0 to start afresh)."""
    ensure_inside(root, target)
    if not overwrite and length is not None:
        try:
            info = target.lstat()
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISREG(info.st_mode) and info.st_size == length:
                return None
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = part.parent
    with suppress(FileExistsError):
        scratch.mkdir(mode=0o700)
    if not stat.S_ISDIR(scratch.lstat().st_mode):  # a link or a file planted in its place
        raise UnsafePathError(f"refusing to write: {str(scratch)!r} is not a plain directory")
    if overwrite:
        discard(part)
    try:
        info = part.lstat()
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(info.st_mode) or (length is not None and info.st_size > length):
        discard(part)  # not ours, or longer than the file: nothing in it can be kept
        return 0
    return info.st_size


def size_of(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0


def discard(part: Path) -> None:
    part.unlink(missing_ok=True)  # unlink never follows a link
    _done_file(part).unlink(missing_ok=True)


def publish(part: Path, target: Path) -> None:
    """Move the verified scratch file into place. A directory at the target is refused; a link
    there is replaced, never followed."""
    try:
        if stat.S_ISDIR(target.lstat().st_mode):
            raise UnsafePathError(f"refusing to replace the directory {str(target)!r}")
    except FileNotFoundError:
        pass
    os.replace(part, target)
    _done_file(part).unlink(missing_ok=True)


def open_for(path: Path, mode: str) -> int:
    """A raw file descriptor for ``wb`` (a new file, created exclusively), ``ab`` or ``r+b``
    (the existing scratch file) writes at explicit offsets; never through a link."""
    flags = os.O_WRONLY | _NOFOLLOW
    if mode == "wb":
        path.unlink(missing_ok=True)
        flags |= os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"refusing to write {str(path)!r}: not a regular file")
    return fd


def create_empty(part: Path) -> None:
    os.close(open_for(part, "wb"))


def start_ranges(part: Path, length: int) -> set[int]:
    """Blocking: the ranges already on disk of an interrupted ranged download, or a fresh
    preallocated scratch file and an empty record."""
    done_file = _done_file(part)
    try:
        fd = os.open(done_file, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        pass
    else:
        with os.fdopen(fd) as handle:
            if size_of(part) == length:
                return {int(x) for x in handle.read().split()}
    fd = open_for(part, "wb")
    try:
        os.ftruncate(fd, length)
    finally:
        os.close(fd)
    record_range(part, None)
    return set()


def record_range(part: Path, index: int | None) -> None:
    """Blocking: append ``index`` to the record of ranges on disk (None: start it empty)."""
    flags = (
        os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if index is not None else os.O_TRUNC)
    )
    fd = os.open(_done_file(part), flags, 0o644)
    try:
        if index is not None:
            os.write(fd, f"{index}\n".encode())
    finally:
        os.close(fd)
