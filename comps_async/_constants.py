"""The SDK's numbers in one place: the protocol's limits (as pyCOMPS and COMPS have them) and the
defaults a caller can change, each defined once. Settings classes (``UploadSettings``,
``DownloadSettings``, ``WaitSettings``, ``RetryPolicy``) document their own fine-grained knobs."""

from __future__ import annotations

import httpx

# --- the protocol ------------------------------------------------------------------------------

TOKEN_HEADER = "X-COMPS-Token"  # the auth header of every COMPS call (§2)
CLIENT_VERSION = 12  # what pyCOMPS sends at login and renewal (§2.2)
MAX_ZIP_BYTES = 1 << 30  # the server's zip limit (§10.3)
MAX_BATCH_ENTITIES = 100  # entities per save request (§8.2)
MAX_BATCH_BYTES = 38912 * 1024  # bytes per save request (§8.2)
MAX_ASSET_COLLECTION_BYTES = 407552 * 1024  # bytes of one asset-collection request (§8.3)
# Files per asset-collection request (§8.3); file-only requests are kept far smaller in bytes
# (UploadSettings.small_request_bytes) so that their bodies fit the session's byte budget.
MAX_FILES_PER_REQUEST = 100
LARGE_FILE_BYTES = 10 * 1024 * 1024  # strictly larger content goes through /upload (§8.4)

# --- defaults ----------------------------------------------------------------------------------

# No timeout at all is pyCOMPS's worst failure mode (§14.1): a stalled socket hangs for ever.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=15.0)
DEFAULT_LIMITS = httpx.Limits(  # the connection pool
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=30.0
)
DEFAULT_MAX_CONCURRENT_REQUESTS = 64  # below the pool's 100 connections
DEFAULT_OPERATION_CONCURRENCY = 16  # commission / cancel / delete / tag many entities
DEFAULT_SAVE_CONCURRENCY = 4  # batches of a save_all in flight at first (pyCOMPS: at most 4)
MAX_SAVE_CONCURRENCY = 16  # batches in flight a save_all may grow to while throughput grows
DEFAULT_HARVEST_CONCURRENCY = 32  # files a harvest downloads at once (and most listings ahead)
DEFAULT_ANALYZE_WINDOW = 16  # items being downloaded or analyzed at once
IDS_PER_REQUEST = 50  # ids per list call of get_many (URLs stay short)
MAX_READ_BYTES = 256 << 20  # Outputs.read() is for small files; bigger ones go to download()
