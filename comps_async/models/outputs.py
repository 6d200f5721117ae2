"""Output file metadata (protocol §10.1)."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from ._base import WireModel

__all__ = ["OutputFileMetadata"]


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
    def path(self) -> str:
        """Path relative to the working directory, ``/``-separated (``output/InsetChart.json``)."""
        # Only a trailing slash is dropped: a leading one stays so that safe_join refuses it.
        root = self.path_from_root.replace("\\", "/").rstrip("/")
        return self.friendly_name if root in ("", ".") else f"{root}/{self.friendly_name}"
