"""Blocking file writes shared by downloads and the local server's uploads."""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["pwrite_all"]


def pwrite_all(fd: int, pieces: Sequence[bytes | memoryview], offset: int) -> int:
    """Write ``pieces`` at ``offset`` with vectored writes (the pieces go to the page cache
    without being joined into one buffer first); returns the bytes written."""
    views = [memoryview(piece) for piece in pieces]
    position = offset
    while views:
        written = os.pwritev(fd, views[:1024], position)  # at most IOV_MAX buffers per call
        position += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return position - offset
