"""HTTP helpers every route module of the local server uses: case-insensitive routes (§1.3),
the COMPS error body, query parameters, names and paths from clients, and authentication."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from .auth import TokenError, User, UserDirectory
from .blobs import Md5MismatchError, UploadRangeError
from .store import BY_PLURAL, BadRequest, Conflict, EntityKind, NotFound

__all__ = [
    "Handler",
    "Route",
    "authenticate",
    "choice",
    "csv",
    "error_response",
    "first_error",
    "guarded",
    "int_param",
    "json_body",
    "kind_of",
    "params",
    "safe_name",
    "safe_relative",
    "truthy",
]

Handler = Callable[[Request], Awaitable[Response]]


class Route(StarletteRoute):
    """A Starlette route whose literal parts match case-insensitively (§1.3)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.path_regex = re.compile(self.path_regex.pattern, re.IGNORECASE)


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    body = {"ResponseMessage": message, "CorrelationId": str(uuid.uuid4()), **extra}
    return JSONResponse(body, status_code=status)


def params(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.query_params.items()}


def csv(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes")


def kind_of(plural: str) -> EntityKind:
    kind = BY_PLURAL.get(plural.lower())
    if kind is None:
        raise NotFound(f"unknown entity type {plural!r}")
    return kind


def safe_name(name: Any, what: str = "FileName") -> str:
    if not isinstance(name, str) or not name.strip() or name in (".", ".."):
        raise BadRequest(f"{what} must be a non-empty base name")
    if "/" in name or "\\" in name or "\x00" in name:
        raise BadRequest(f"{what} {name!r} must not contain a path")
    return name


def safe_relative(path: Any) -> str:
    if path in (None, ""):
        return ""
    text = str(path).replace("\\", "/")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or re.match(r"^[A-Za-z]:", text) or ".." in parts:
        raise BadRequest(f"RelativePath {path!r} must stay inside the collection")
    if "\x00" in text:  # no file system can hold it: every simulation using it would fail
        raise BadRequest(f"RelativePath {path!r} contains a NUL character")
    return "/".join(p for p in parts if p not in ("", "."))


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def int_param(text: str | None, name: str) -> int:
    if text in (None, ""):
        return 0
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < 0:
        raise BadRequest(f"{name} must not be negative")
    return value


def choice(value: str, choices: tuple[str, ...], what: str) -> str:
    for choice in choices:
        if choice.lower() == value.lower():
            return choice
    raise BadRequest(f"{what} must be one of {', '.join(choices)}")


def tags_object(value: Any) -> dict[str, Any]:
    """A request's ``Tags``: a JSON object, or none."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("Tags must be a JSON object")
    return value


def first_error(group: BaseException) -> BaseException:
    """The first leaf of an exception group (task groups wrap a single failure)."""
    while isinstance(group, BaseExceptionGroup) and group.exceptions:
        group = group.exceptions[0]
    return group


def authenticate(users: UserDirectory, request: Request) -> User:
    """The user of the request's ``X-COMPS-Token``; ``TokenError`` without a valid one."""
    token = request.headers.get("x-comps-token")
    if not token:
        raise TokenError("missing X-COMPS-Token header; log in with POST /api/tokens")
    return users.verify(token)


def guarded(handler: Handler, users: UserDirectory, *, auth: bool = True) -> Handler:
    """``handler`` behind authentication (``request.state.user``), with the store's and the
    blob store's errors answered as COMPS does: ``{"ResponseMessage", "CorrelationId"}``."""

    async def run(request: Request) -> Response:
        try:
            if auth:
                request.state.user = authenticate(users, request)
            return await handler(request)
        except TokenError as exc:
            return error_response(401, str(exc))
        except BadRequest as exc:
            return error_response(400, str(exc), **exc.details)
        except (Md5MismatchError, UploadRangeError) as exc:
            return error_response(400, str(exc))
        except NotFound as exc:
            return error_response(404, str(exc))
        except Conflict as exc:
            return error_response(409, str(exc))
        except json.JSONDecodeError as exc:
            return error_response(400, f"malformed JSON body: {exc}")

    return run
