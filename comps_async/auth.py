"""Credentials, COMPS tokens and the token cache file (protocol §2).

A token is a comma-separated list (§2.1): field 2 is the user, field 6 the expiry
``YYYY-MM-DD-HH-MM-SS`` UTC, field 7 (inferred) the creation time. Tokens and passwords are kept
as ``SecretStr`` so that they never show up in reprs, logs or exceptions.
"""

from __future__ import annotations

import base64
import functools
import getpass
import logging
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
from pydantic import SecretStr

from ._constants import CLIENT_VERSION, TOKEN_HEADER
from ._hosts import Host
from .errors import AuthenticationError, api_error

__all__ = [
    "CredentialPrompt",
    "Credentials",
    "TokenInfo",
    "TokenManager",
    "console_prompt",
    "token_cache_dir",
]

logger = logging.getLogger(__name__)

# pyCOMPS sends both on every call, /api/tokens included (§3.1).
_JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
MAX_PROMPTS = 3  # a wrong password never loops forever (§14.5)
# Renew ahead of expiry: the web UI renews 30 min before a 4-hour token expires (§2.4); for
# short-lived tokens renew once half the lifetime has gone.
RENEW_AHEAD = timedelta(minutes=30)
_EXPIRY_FORMAT = "%Y-%m-%d-%H-%M-%S"

CredentialPrompt = Callable[[str], Awaitable[tuple[str, str] | None]]
"""``async (host) -> (username, password) | None``; ``None`` cancels the login."""


async def console_prompt(host: str) -> tuple[str, str] | None:
    """pyCOMPS's ConsoleCredentialPrompt: ask on the terminal (the password is not echoed).
    The default of a Session given no token or credentials when stdin is a terminal; an empty
    user name cancels the login."""

    def ask() -> tuple[str, str] | None:
        print(f"Log in to {host}", file=sys.stderr)
        username = input("Username: ").strip()
        if not username:
            return None
        return username, getpass.getpass("Password: ")

    return await anyio.to_thread.run_sync(ask)


def interactive() -> bool:
    """Whether a person can answer a prompt (stdin and stderr are terminals)."""
    return sys.stdin is not None and sys.stdin.isatty() and sys.stderr.isatty()


@dataclass(frozen=True)
class Credentials:
    """A user name and password (the password never printed)."""

    username: str
    password: SecretStr


@dataclass(frozen=True)
class TokenInfo:
    """What the SDK reads out of a token."""

    user: str
    expires: datetime
    created: datetime | None
    system: bool = False  # field 1 "System": a service's token, never renewed (§2.4)

    @classmethod
    def parse(cls, token: str) -> TokenInfo:
        """Parse a COMPS token; ``ValueError`` when it is malformed."""
        fields = token.split(",", 15)
        if len(fields) < 14:
            raise ValueError("invalid COMPS token: fewer than 14 fields")
        try:
            expires = datetime.strptime(fields[6], _EXPIRY_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise ValueError("invalid COMPS token: unreadable expiry") from None
        try:
            created: datetime | None = datetime.strptime(fields[7], _EXPIRY_FORMAT).replace(
                tzinfo=UTC
            )
        except ValueError:
            created = None
        return cls(fields[2], expires, created, system=fields[1] == "System")

    def renew_at(self) -> datetime:
        """When to renew: 30 minutes ahead, or half-way for shorter lifetimes."""
        ahead = RENEW_AHEAD
        if self.created is not None:
            ahead = min(ahead, (self.expires - self.created) / 2)
        return self.expires - ahead


@functools.lru_cache(maxsize=8)
def _readable(token: str) -> TokenInfo | None:
    """``TokenInfo.parse``, once per token (every request asks whether it needs renewing)."""
    try:
        return TokenInfo.parse(token)
    except ValueError:
        return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def token_cache_dir() -> Path:
    """Per-user directory of token cache files: ``$XDG_RUNTIME_DIR`` (shared with pyCOMPS) when
    it is private to this user, else ``~/.cache/comps_async`` — never a shared directory (CI
    machines often have a world-writable ``XDG_RUNTIME_DIR``, mode 1777)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and _is_private_dir(Path(runtime)):
        return Path(runtime)
    return Path.home() / ".cache" / "comps_async"


def _is_private_dir(path: Path) -> bool:
    """A real directory (not a link) owned by this user that nobody else can write to."""
    try:
        info = path.lstat()
    except OSError:
        return False
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return stat.S_ISDIR(info.st_mode) and owner_ok and not info.st_mode & 0o022


def _is_own_file(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and (not hasattr(os, "getuid") or info.st_uid == os.getuid())


class TokenManager:
    """Holds the session's token: loads it from the cache, logs in, renews before expiry, and
    re-logs in once after a 401 when credentials are known."""

    def __init__(
        self,
        host: Host,
        send: Callable[[httpx.Request], Awaitable[httpx.Response]],
        *,
        token: SecretStr | None = None,
        credentials: Credentials | None = None,
        prompt: CredentialPrompt | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.host = host
        self._send = send
        self._token = token
        self._explicit_token = token is not None
        self._credentials = credentials
        self._prompt = prompt
        self._cache_dir = cache_dir if cache_dir is not None else token_cache_dir()
        self._lock = anyio.Lock()
        # What time it is when judging a token's expiry (replaceable: tests jump ahead).
        self.clock: Callable[[], datetime] = _utc_now

    def __repr__(self) -> str:
        return f"TokenManager(host={self.host.base!r}, token=**********)"

    @property
    def cache_file(self) -> Path:
        """``COMPS_Authtoken_<host>_<user>.txt`` in the per-user cache dir (§2.5)."""
        return self._cache_dir / f"COMPS_Authtoken_{self.host.cache_key}_{getpass.getuser()}.txt"

    @property
    def can_relogin(self) -> bool:
        """Whether a rejected token can be replaced without the caller."""
        return self._credentials is not None or self._prompt is not None

    async def token(self) -> str:
        """A valid token, logging in or renewing first when needed."""
        current = self._token
        if current is not None and not self._needs_refresh(current.get_secret_value()):
            return current.get_secret_value()
        async with self._lock:
            if self._token is None and not self._explicit_token:
                cached = await self._read_cache()
                if cached is not None:
                    self._token = SecretStr(cached)
            if self._token is None:
                await self._login()
            elif self._needs_refresh(self._token.get_secret_value()):
                await self._refresh()
            assert self._token is not None
            return self._token.get_secret_value()

    async def login(self) -> str:
        """Log in now with the credentials (or the prompt) and cache the new token; a cached
        token is never taken instead, so a wrong password fails here."""
        async with self._lock:
            await self._login()
            assert self._token is not None
            return self._token.get_secret_value()

    async def info(self) -> TokenInfo | None:
        """What the token says of itself (None for a token we cannot read)."""
        try:
            return TokenInfo.parse(await self.token())
        except ValueError:
            return None

    async def user(self) -> str | None:
        """The user name the token belongs to (None for a token we cannot read)."""
        info = await self.info()
        return info.user or None if info is not None else None

    @property
    def cache_dir(self) -> Path:
        """The directory of the token cache (per-host records live beside it)."""
        return self._cache_dir

    async def relogin(self, rejected: str) -> str | None:
        """After a 401 with ``rejected``: log in again once. ``None`` if there is no way to."""
        if not self.can_relogin:
            return None
        async with self._lock:
            if self._token is not None and self._token.get_secret_value() != rejected:
                return self._token.get_secret_value()  # another task already re-logged in
            await self._login()
            assert self._token is not None
            return self._token.get_secret_value()

    def _needs_refresh(self, token: str) -> bool:
        info = _readable(token)
        if info is None:
            return False  # opaque to us: let the server judge it
        if info.system:  # pyCOMPS's AuthManager: system tokens cannot be renewed (§2.4)
            return self.clock() >= info.expires and self.can_relogin
        return self.clock() >= info.renew_at()

    async def _refresh(self) -> None:
        assert self._token is not None
        info = TokenInfo.parse(self._token.get_secret_value())
        if self.clock() < info.expires and not info.system:
            try:
                await self._renew()
                return
            except AuthenticationError:
                if not self.can_relogin:
                    raise
        if not self.can_relogin:
            raise AuthenticationError(
                401, "the token has expired", method="PUT", url=self.host.url("tokens")
            )
        await self._login()

    async def _renew(self) -> None:
        assert self._token is not None
        request = httpx.Request(
            "PUT",
            self.host.url("tokens"),
            headers={**_JSON_HEADERS, TOKEN_HEADER: self._token.get_secret_value()},
            json={"ClientVersion": CLIENT_VERSION},
        )
        await self._accept(await self._send(request), "renew")

    async def _login(self) -> None:
        for attempt in range(MAX_PROMPTS):
            credentials = self._credentials
            if credentials is None or attempt > 0:
                if self._prompt is None:
                    if credentials is None:
                        raise AuthenticationError(
                            401,
                            "no token and no credentials",
                            method="POST",
                            url=self.host.url("tokens"),
                        )
                    break
                answer = await self._prompt(self.host.base)
                if answer is None:
                    raise AuthenticationError(
                        401, "login cancelled", method="POST", url=self.host.url("tokens")
                    )
                credentials = Credentials(answer[0], SecretStr(answer[1]))
            password = base64.b64encode(credentials.password.get_secret_value().encode())
            request = httpx.Request(
                "POST",
                self.host.url("tokens"),
                headers=_JSON_HEADERS,
                json={
                    "Username": credentials.username,
                    "Password": password.decode(),
                    "ClientVersion": CLIENT_VERSION,
                },
            )
            response = await self._send(request)
            if response.status_code == 401 and self._prompt is not None:
                continue  # ask again, at most MAX_PROMPTS times
            await self._accept(response, "login")
            self._credentials = credentials
            return
        raise AuthenticationError(
            401, "Bad username/password", method="POST", url=self.host.url("tokens")
        )

    async def _accept(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (301, 302, 307, 308):
            raise AuthenticationError(
                response.status_code,
                f"{what} was redirected; is the host 'http' where the server wants 'https'?",
            )
        if response.status_code >= 400:
            raise api_error(response)  # the same typed error as every other call
        token = response.headers.get(TOKEN_HEADER) or _json_or_empty(response).get("Token")
        if not token:
            raise AuthenticationError(
                response.status_code, f"the server's {what} answer carries no token"
            )
        self._token = SecretStr(str(token))
        await self._write_cache(str(token))

    async def _read_cache(self) -> str | None:
        path = anyio.Path(self.cache_file)
        try:
            # A token planted by someone else, or in a directory others can write to: unused.
            private = await anyio.to_thread.run_sync(_is_private_dir, self.cache_file.parent)
            if not private or not _is_own_file(await path.lstat()):
                return None
            token = (await path.read_text()).splitlines()[0].strip()
            info = TokenInfo.parse(token)
        except (OSError, IndexError, ValueError):
            return None
        if self.clock() >= info.expires:
            return None
        if self._credentials is not None and info.user != self._credentials.username:
            return None
        return token

    async def _write_cache(self, token: str) -> None:
        def write() -> None:
            path = self.cache_file
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not _is_private_dir(path.parent):
                raise OSError(f"{path.parent} is not private to this user; not caching there")
            tmp = path.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)  # a stale one keeps its old mode: never reuse it
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(tmp, flags, 0o600)
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "w") as handle:
                handle.write(token)
            os.replace(tmp, path)

        try:
            await anyio.to_thread.run_sync(write)
        except OSError as exc:  # a read-only home must not break the session
            logger.warning("could not write the token cache: %s", exc)


def _json_or_empty(response: httpx.Response) -> dict[str, object]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
