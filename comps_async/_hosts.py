"""Host strings and URL building (protocol §1): the one place that knows ``/api`` vs ``/asset/``."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Host"]

_HOST = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<name>[\w.-]+)(?::(?P<port>\d{1,5}))?/?$")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


@dataclass(frozen=True)
class Host:
    """A normalised COMPS host, e.g. ``https://comps.idmod.org`` or ``http://127.0.0.1:8100``."""

    base: str

    @classmethod
    def parse(cls, text: str) -> Host:
        """Apply pyCOMPS's host rules (§1.1): optional http/https scheme (https when missing),
        a host name, an optional port; no path, user-info or IPv6 literal; default ports
        dropped."""
        match = _HOST.match(text.strip())
        if not match:
            raise ValueError(
                f"invalid COMPS host {text!r}: expected [http[s]://]host[:port] with no path, "
                "e.g. https://comps.idmod.org or http://127.0.0.1:8100"
            )
        scheme = match["scheme"] or "https"
        port = match["port"]
        if port is not None and (port == _DEFAULT_PORTS[scheme] or not 0 < int(port) < 65536):
            if port != _DEFAULT_PORTS[scheme]:
                raise ValueError(f"invalid port in COMPS host {text!r}")
            port = None
        return cls(f"{scheme}://{match['name'].lower()}" + (f":{port}" if port else ""))

    def url(self, path: str) -> str:
        """Absolute URL of a protocol path: ``/api`` prefixed unless it starts with ``asset/``."""
        stripped = path.lstrip("/")
        if stripped.lower().startswith("asset/"):
            return f"{self.base}/{stripped}"
        return f"{self.base}/api/{stripped}"

    def reroot(self, server_url: str) -> str:
        """Point a server-provided download URL (``Url``/``Uri``) at this host: keep everything
        from ``/asset/`` on (query included), as pyCOMPS does (§1.2)."""
        index = server_url.find("/asset/")
        if index < 0:
            raise ValueError(f"unable to parse asset url {server_url!r}: no '/asset/' in it")
        return self.base + server_url[index:]

    @property
    def cache_key(self) -> str:
        """The host as used in token cache file names (``:`` and ``/`` replaced by ``_``)."""
        return self.base.replace(":", "_").replace("/", "_")

    def __str__(self) -> str:
        return self.base
