"""Per-entity operations of a Session."""

from .asset_collections import AssetCollections
from .base import EntityResource, IdLike, StatefulResource, as_id, parse_content_range
from .entities import Experiments, Simulations, Suites, WorkItems

__all__ = [
    "AssetCollections",
    "EntityResource",
    "Experiments",
    "IdLike",
    "Simulations",
    "StatefulResource",
    "Suites",
    "WorkItems",
    "as_id",
    "parse_content_range",
]
