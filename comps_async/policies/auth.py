"""AuthPolicy: puts the session's token on each request; one transparent re-login on 401."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from .._constants import TOKEN_HEADER
from ..auth import TokenManager
from ..pipeline import OPTION_NO_AUTH, CallNext, option

__all__ = ["AuthPolicy"]


@dataclass
class AuthPolicy:
    """Adds ``X-COMPS-Token``. pyCOMPS turns any 401 into an error (§14.6); we log in again
    once when credentials are known and resend, then let a second 401 through."""

    tokens: TokenManager

    async def send(self, request: httpx.Request, call_next: CallNext) -> httpx.Response:
        """Send ``request`` with the session's token; log in again once on a 401."""
        if option(request, OPTION_NO_AUTH):
            return await call_next(request)
        token = await self.tokens.token()
        request.headers[TOKEN_HEADER] = token
        response = await call_next(request)
        if response.status_code != 401:
            return response
        fresh = await self.tokens.relogin(token)
        if fresh is None:
            return response
        await response.aclose()
        request.headers[TOKEN_HEADER] = fresh
        return await call_next(request)
