"""Output file metadata (protocol §10.1)."""

from __future__ import annotations

import base64
import binascii
import re
from uuid import UUID

from pydantic import Field

from ._base import WireModel

__all__ = ["OutputFileMetadata", "md5_hex"]

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")


def md5_hex(value: str | None) -> str | None:
    """An MD5 as 32 lower-case hex digits, from any form a server may list it in: hex, the
    dashed UUID form COMPS uses elsewhere (§4.3), or base64 of the 16 bytes (Azure's
    Content-MD5). None when there is none, or it is in no form we can read (inferred: pyCOMPS
    never reads this field, so its form on real COMPS is unknown)."""
    if not value:
        return None
    text = value.strip().replace("-", "")
    if _HEX32.match(text):
        return text.lower()
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 16 else None


class OutputFileMetadata(WireModel):
    """One output file of a simulation or work item, as listed by ``/asset/.../Output``."""

    id: UUID | None = None
    length: int | None = None
    friendly_name: str
    path_from_root: str = "."
    url: str | None = None
    mime_type: str | None = None
    # pyCOMPS ignores MD5; we keep it to verify downloads when the server gives it.
    md5: str | None = Field(default=None, alias="MD5")
    type: str | None = None

    @property
    def md5_hex(self) -> str | None:
        """``md5`` as 32 hex digits, or None (absent, or in a form no one can read)."""
        return md5_hex(self.md5)

    @property
    def path(self) -> str:
        """Path relative to the working directory, ``/``-separated (``output/InsetChart.json``)."""
        # Only a trailing slash is dropped: a leading one stays so that safe_join refuses it.
        root = self.path_from_root.replace("\\", "/").rstrip("/")
        return self.friendly_name if root in ("", ".") else f"{root}/{self.friendly_name}"
