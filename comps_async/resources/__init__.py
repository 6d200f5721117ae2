"""Per-entity operations of a Session."""

from .base import EntityResource, StatefulResource, as_id, parse_content_range
from .entities import AssetCollections, Experiments, Simulations, Suites, WorkItems

__all__ = [
    "AssetCollections",
    "EntityResource",
    "Experiments",
    "Simulations",
    "StatefulResource",
    "Suites",
    "WorkItems",
    "as_id",
    "parse_content_range",
]
