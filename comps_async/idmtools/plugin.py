"""The idmtools plugin entry (``idmtools_platform``): ``type = COMPS_ASYNC``."""

from __future__ import annotations

from typing import Any

from idmtools.config import IdmConfigParser
from idmtools.registry.platform_specification import (
    PlatformSpecification,
    example_configuration_impl,
    get_platform_impl,
    get_platform_type_impl,
)
from idmtools.registry.plugin_specification import get_description_impl

from .platform import COMPSAsyncPlatform

__all__ = ["COMPSAsyncPlatformSpecification"]

EXAMPLE_CONFIGURATION = """
[MY_COMPS]
type = COMPS_ASYNC
endpoint = https://comps.idmod.org
environment = Calculon
"""


class COMPSAsyncPlatformSpecification(PlatformSpecification):  # type: ignore[misc]
    """``COMPS_ASYNC``: the COMPS platform on comps_async's engine."""

    @classmethod
    def get_name(cls, strip_all: bool = True) -> str:
        """The platform type users write: ``COMPS_ASYNC``."""
        return "COMPS_ASYNC"

    @get_description_impl  # type: ignore[untyped-decorator]
    def get_description(self) -> str:
        """What the plugin is."""
        return "The COMPS platform on comps_async: fast, exactly-once creation and analysis"

    @get_platform_impl  # type: ignore[untyped-decorator]
    def get(self, **configuration: Any) -> COMPSAsyncPlatform:
        """A platform from the ini block's (or the call's) settings."""
        return COMPSAsyncPlatform(**configuration)

    @example_configuration_impl  # type: ignore[untyped-decorator]
    def example_configuration(self) -> str:
        """An ini block."""
        return EXAMPLE_CONFIGURATION

    @get_platform_type_impl  # type: ignore[untyped-decorator]
    def get_type(self) -> type[COMPSAsyncPlatform]:
        """The platform class."""
        return COMPSAsyncPlatform

    def get_configuration_aliases(self) -> dict[str, dict[str, str]]:
        """``Platform("COMPS_ASYNC", endpoint=..., environment=...)`` with no ini block: the
        type's own name is an alias whose defaults are the stock platform's. An ini block
        named ``COMPS_ASYNC`` wins: idmtools looks aliases up first, so the alias steps aside."""
        if IdmConfigParser.has_section("COMPS_ASYNC"):
            return {}
        return {"COMPS_ASYNC": {"endpoint": "https://comps.idmod.org", "environment": "Calculon"}}

    def get_python_executable(self, alias: str | None = None) -> str:
        """The cluster's Python, as the stock COMPS plugin answers (whatever the client's OS)."""
        return "python3"

    def get_version(self) -> str:
        """comps_async's version."""
        from importlib.metadata import version

        return version("comps-async")
