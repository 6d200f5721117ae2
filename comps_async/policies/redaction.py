"""Secrets never reach a log, even through the libraries under us.

httpcore (httpx's own transport, used under trio) logs response headers at DEBUG, the login
answer's ``X-COMPS-Token`` included. A filter on the loggers of the HTTP stack rewrites such
records before any handler sees them. Filters are the only hook those libraries offer; this
one is stateless, installed once per logger, and harmless to everyone else's records.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactSecrets", "install_redaction"]

# Loggers of the HTTP stack below the SDK that may print headers. A logger's filters see only
# the records logged on it, not those of its children, so the children are named too.
_STACK_PREFIXES = ("httpcore", "httpx", "h11", "aiohttp", "hpack")
_STACK_LOGGERS = (
    *_STACK_PREFIXES,
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.connection",
    "httpcore.proxy",
    "httpcore.socks",
    "aiohttp.client",
    "aiohttp.internal",
    "hpack.hpack",
)
_HEADER = r"(x-comps-token|authorization|proxy-authorization|cookie|set-cookie|password)"
# (b'X-COMPS-Token', b'...') as httpcore prints header tuples, and "Name: value" lines.
_SECRET = re.compile(
    rf"""(?ix)
    ( {_HEADER} ['"]? \s* [,:=] \s* )           # the name and what separates it from the value
    ( b?'[^']*' | b?"[^"]*" | [^\s,)]+ )         # the value: quoted (tokens hold commas) or bare
    """
)


class RedactSecrets(logging.Filter):
    """Replaces token, cookie, authorization and password values in a record by ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a broken record is not ours to fix; never break logging
            return True
        redacted = _SECRET.sub(r"\1'***'", text)
        if redacted != text:
            record.msg, record.args = redacted, None
        return True


def install_redaction() -> None:
    """Add ``RedactSecrets`` to the HTTP stack's loggers (idempotent)."""
    existing = [n for n in logging.root.manager.loggerDict if n.startswith(_STACK_PREFIXES)]
    for name in {*_STACK_LOGGERS, *existing}:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in target.filters):
            target.addFilter(RedactSecrets())
