"""Protocol constants and defaults used in more than one module: one definition each."""

from __future__ import annotations

TOKEN_HEADER = "X-COMPS-Token"  # the auth header of every COMPS call (§2)
MAX_ZIP_BYTES = 1 << 30  # the server's zip limit (§10.3)
DEFAULT_MAX_CONCURRENT_REQUESTS = 64  # below httpx's default pool of 100 connections
