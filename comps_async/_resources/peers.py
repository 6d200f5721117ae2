"""How a resource reaches the others of its session without knowing the Session: typed
properties the Session satisfies (as openai-python's resources hold a client handle), and the
one way to go from an entity type (a name on the wire, or a model class) to its resource."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..models import Entity, entity_type

if TYPE_CHECKING:
    from .asset_collections import AssetCollections
    from .base import EntityResource
    from .entities import Experiments, Simulations, Suites, WorkItems
    from .outputs import Outputs

__all__ = ["Peers", "resource_of"]


class Peers(Protocol):
    """The resources of one session."""

    @property
    def suites(self) -> Suites:
        """Suites of the session."""
        ...

    @property
    def experiments(self) -> Experiments:
        """Experiments of the session."""
        ...

    @property
    def simulations(self) -> Simulations:
        """Simulations of the session."""
        ...

    @property
    def work_items(self) -> WorkItems:
        """Work items of the session."""
        ...

    @property
    def outputs(self) -> Outputs:
        """Output files of the session."""
        ...

    @property
    def asset_collections(self) -> AssetCollections:
        """Asset collections of the session."""
        ...


def resource_of(peers: Peers, entity: str | type[Entity]) -> EntityResource[Any]:
    """The resource of an entity type: ``"Simulation"``, ``"Simulations"`` or the class."""
    resources: dict[str, EntityResource[Any]] = {
        "Suite": peers.suites,
        "Experiment": peers.experiments,
        "Simulation": peers.simulations,
        "WorkItem": peers.work_items,
        "AssetCollection": peers.asset_collections,
    }
    return resources[entity_type(entity).__name__]
