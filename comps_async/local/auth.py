"""Users and tokens of the local server (protocol §2).

Users live in ``users.json`` in the data dir with salted PBKDF2 password hashes. Tokens have the
COMPS comma-separated layout (§2.1): field 1 type, 2 user, 6 expiry ``YYYY-MM-DD-HH-MM-SS`` UTC,
12 groups and 13 environments joined by ``-``, and an HMAC-SHA256 signature as field 14.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["DEFAULT_USER", "TokenError", "User", "UserDirectory"]

DEFAULT_USER = "local"
DEFAULT_GROUP = "local"
DEFAULT_ENVIRONMENT = "Local"
_EXPIRY_FORMAT = "%Y-%m-%d-%H-%M-%S"
_PBKDF2_ROUNDS = 100_000


class TokenError(ValueError):
    """The token is malformed, forged or expired."""


@dataclass(frozen=True)
class User:
    """A user of the local server."""

    username: str
    groups: tuple[str, ...] = (DEFAULT_GROUP,)
    environments: tuple[str, ...] = (DEFAULT_ENVIRONMENT,)
    email: str = ""


@dataclass
class UserDirectory:
    """Users, password checks and token minting for one data dir."""

    path: Path
    token_lifetime: timedelta = timedelta(hours=4)
    _secret: bytes = field(init=False, repr=False)
    _users: dict[str, dict[str, object]] = field(init=False, repr=False)
    initial_password: str | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        secret_file = self.path.parent / "token-secret"
        if not secret_file.exists():
            _write_private(secret_file, secrets.token_hex(32))
        self._secret = secret_file.read_text().strip().encode()
        self._users = json.loads(self.path.read_text())["users"] if self.path.exists() else {}
        if DEFAULT_USER not in self._users:
            # Created once on first start; the password is shown once by whoever started us.
            self.initial_password = secrets.token_urlsafe(12)
            self.set_password(DEFAULT_USER, self.initial_password)

    def set_password(self, username: str, password: str) -> None:
        """Create or update a user."""
        salt = secrets.token_bytes(16)
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ROUNDS)
        entry = self._users.get(username, {})
        entry.update({"salt": salt.hex(), "hash": digest.hex()})
        self._users[username] = entry
        _write_private(self.path, json.dumps({"users": self._users}, indent=2))

    def check_password(self, username: str, password: str) -> User | None:
        """The user when the password matches."""
        entry = self._users.get(username)
        if entry is None:
            return None
        digest = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), bytes.fromhex(str(entry["salt"])), _PBKDF2_ROUNDS
        )
        return (
            self.user(username) if hmac.compare_digest(digest.hex(), str(entry["hash"])) else None
        )

    def exists(self, username: str) -> bool:
        """Whether ``username`` is a configured user."""
        return username in self._users

    def default_user(self) -> User:
        """The user every data dir has (``local``)."""
        return self.user(DEFAULT_USER)

    def user(self, username: str) -> User:
        """A configured user."""
        entry = self._users[username]
        return User(
            username,
            tuple(entry.get("groups", [DEFAULT_GROUP])),  # type: ignore[arg-type]
            tuple(entry.get("environments", [DEFAULT_ENVIRONMENT])),  # type: ignore[arg-type]
        )

    def mint(self, user: User, lifetime: timedelta | None = None) -> str:
        """A signed token for ``user``."""
        now = datetime.now(UTC)
        expiry = now + (lifetime or self.token_lifetime)
        fields = [
            "1",
            "Auth",
            user.username,
            "localhost",
            "",
            "localhost",
            expiry.strftime(_EXPIRY_FORMAT),
            now.strftime(_EXPIRY_FORMAT),
            "",
            "comps_async.local",
            "",
            user.email,
            "-".join(user.groups),
            "-".join(user.environments),
        ]
        body = ",".join(fields)
        return f"{body},{self._sign(body)}"

    def verify(self, token: str) -> User:
        """The user a valid, unexpired token belongs to."""
        body, _, signature = token.rpartition(",")
        fields = body.split(",")
        if len(fields) < 14 or not hmac.compare_digest(signature, self._sign(body)):
            raise TokenError("invalid token")
        try:
            expiry = datetime.strptime(fields[6], _EXPIRY_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise TokenError("invalid token expiry") from None
        if datetime.now(UTC) >= expiry:
            raise TokenError("token expired; log in again")
        if fields[2] not in self._users:
            raise TokenError("unknown user")
        return self.user(fields[2])

    def _sign(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
