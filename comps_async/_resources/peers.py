"""How a resource reaches the others of its session without knowing the Session: a registry
the Session satisfies (as openai-python's resources hold a client handle)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..models import Entity

if TYPE_CHECKING:
    from .base import EntityResource
    from .entities import Experiments, Simulations, WorkItems
    from .outputs import Outputs

__all__ = ["Peers"]


class Peers(Protocol):
    """The resources of one session."""

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

    def resource(self, entity: str | type[Entity]) -> EntityResource[Any]:
        """The resource of an entity type."""
        ...
