"""What one host is known to answer where COMPS's behaviour is inferred (PROTOCOL.md): one
typed record per host — each fact with its possible values — that ``doctor`` measures, that
calls learn from as they meet the host (``Requester.learn``), that is saved beside the token
cache and read by whoever needs a fact."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

__all__ = [
    "Capabilities",
    "Facts",
    "capabilities_path",
    "load_capabilities",
    "save_capabilities",
]

Answer = Literal["yes", "no", "unknown"]
TokenKind = Literal["Auth", "System", "unknown"]
StatsForm = Literal["path", "query"]
IdsParam = Literal["accept", "ignore", "reject", "unknown"]
ListingMd5 = Literal["hex", "uuid", "base64", "none", "unreadable", "unknown"]


@dataclass
class Capabilities:
    """What one host answered to each probe ("unknown" where there was nothing to probe)."""

    host: str
    token_kind: TokenKind = "unknown"  # "Auth" (a user's, renewed) or "System" (never renewed)
    # The Stats forms that answer, the one to use first (learned by stats(), probed by doctor).
    stats_forms: list[StatsForm] = field(default_factory=list)
    ids_param: IdsParam = "unknown"  # Ids=a,b,c lists (learned by get_many, probed by doctor)
    content_range: Answer = "unknown"  # lists say Content-Range when partial
    listing_md5: ListingMd5 = "unknown"
    range_requests: Answer = "unknown"  # a ranged GET of an output answers 206
    upload_check_404: Answer = "unknown"  # /upload/check of unknown content answers 404
    tag_filter_exact: Answer = "unknown"  # write probe: tagfilters=k=v finds the entity
    tag_filter_case_insensitive: Answer = "unknown"  # ... with the value in other case
    partial_update_keeps_fields: Answer = "unknown"  # an update without Description keeps it
    # A batch may attach content shared by several entities once; "no" once a server refused
    # it (learned by a save, which then sends pyCOMPS's one part per file).
    shared_parts: Answer = "unknown"
    notes: list[str] = field(default_factory=list)

    def ids_param_works(self) -> bool:
        """Whether to ask for many entities with one ``Ids=`` list (not known not to work)."""
        return self.ids_param not in ("ignore", "reject")

    def to_json(self) -> str:
        """The record as written beside the token cache."""
        return json.dumps(asdict(self), indent=2)


class Facts(TypedDict, total=False):
    """What a call can learn about its host (``Requester.learn``), each with its values."""

    stats_forms: list[StatsForm]
    ids_param: IdsParam
    shared_parts: Answer


def capabilities_path(cache_dir: Path, host_key: str) -> Path:
    """Where a host's record lives: beside its cached token."""
    return cache_dir / f"COMPS_Capabilities_{host_key}.json"


def load_capabilities(path: Path) -> Capabilities | None:
    """Blocking: a host's record, or None (absent or unreadable)."""
    try:
        data = json.loads(path.read_text())
        return Capabilities(**data)
    except (OSError, ValueError, TypeError):
        return None


def save_capabilities(path: Path, found: Capabilities) -> None:
    """Blocking: write a host's record (private file, private directory)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(found.to_json())
    os.chmod(path, 0o600)
