"""Tokens, environments and users (§2)."""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..auth import DEFAULT_GROUP, User
from ..state import ServerState
from ..store import (
    BadRequest,
    NotFound,
)
from ..web import (
    authenticate,
    error_response,
    json_body,
)

__all__ = ["AuthRoutes"]

logger = logging.getLogger(__name__)


@dataclass
class AuthRoutes:
    """Log in, renew, and what a user may see."""

    state: ServerState

    async def login(self, request: Request) -> Response:
        body = await json_body(request)
        username = body.get("Username") or body.get("UserName")
        try:
            password = base64.b64decode(str(body.get("Password", "")), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest("Password must be base64 of the UTF-8 password") from None
        user = self.state.users.check_password(str(username), password) if username else None
        if user is None:
            return error_response(401, "Bad username/password")
        return self._token_response(user)

    async def renew(self, request: Request) -> Response:
        return self._token_response(authenticate(self.state.users, request))

    def _token_response(self, user: User) -> Response:
        token = self.state.users.mint(user)
        body = {
            "Token": token,
            "RequestingToken": {
                "UserName": user.username,
                "Groups": list(user.groups),
                "Environments": list(user.environments),
                "Roles": [],
                "Applications": [],
            },
        }
        return JSONResponse(body, headers={"X-COMPS-Token": token})

    async def environments(self, request: Request) -> Response:
        user: User = request.state.user
        offered = self.state.compat.environments or user.environments
        return JSONResponse({"Environments": [{"EnvironmentName": e} for e in offered]})

    async def environment(self, request: Request) -> Response:
        name = request.path_params["name"]
        offered = self.state.compat.environments
        known = next((e for e in offered if e.lower() == name.lower()), None)
        if offered and known is None:
            raise NotFound(f"no environment {name!r}")
        work = str(self.state.data_dir / "work")
        return JSONResponse(
            {
                "Environments": [
                    {
                        "EnvironmentName": known or name,
                        "GroupName": DEFAULT_GROUP,
                        "Macros": {
                            "COMPS_PATH(USER)": work,
                            "DOCKER_MOUNTS": f"COMPS_DATA;{work};;{work}",
                        },
                    }
                ]
            }
        )

    async def list_users(self, request: Request) -> Response:
        user: User = request.state.user
        return JSONResponse({"Users": [{"UserName": user.username, "Groups": list(user.groups)}]})
