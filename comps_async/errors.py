"""The comps_async exception tree.

- CompsError — anything the SDK raises about COMPS itself (never a caller's bug)
    - ApiError(status, message, correlation_id, details) — the server answered 4xx/5xx
        - AuthenticationError — 401/403: bad credentials, expired or rejected token
        - NotFoundError — 404: unknown or deleted id
        - ConflictError — 409: illegal state transition
        - RateLimitedError — 429 after the retries ran out
        - ServerError — 5xx after the retries ran out
    - MalformedResponseError — a 2xx answer whose body cannot be read as the protocol says
    - MissingAssetsError(md5s) — a save referenced content the server does not have
    - ChecksumMismatchError — downloaded or uploaded bytes do not match their md5/length
    - BatchSaveError(saved, failed, unknown) — some batches of a save_all failed for good
    - OutcomeUnknownError(key) — a create may or may not have happened; re-run it to find out
    - KeyConflictError(key) — an idempotency key already names a different entity
    - TransferError — the connection failed (after retries) or a transfer could not finish
        - DeadlineExceededError — a call did not finish within its deadline (retries included)

Caller mistakes (bad ids, unknown field names, wrong argument types) raise ``ValueError`` or
``TypeError``, or a pydantic ``ValidationError`` for models, before anything is sent: they stay
outside this tree so that ``except CompsError`` never hides a bug.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import httpx

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BatchSaveError",
    "ChecksumMismatchError",
    "CompsError",
    "ConflictError",
    "DeadlineExceededError",
    "KeyConflictError",
    "MalformedResponseError",
    "MissingAssetsError",
    "NotFoundError",
    "OutcomeUnknownError",
    "RateLimitedError",
    "ServerError",
    "TransferError",
    "api_error",
    "retry_after_s",
    "transfer_error",
]


class CompsError(Exception):
    """Root of every error the SDK raises about COMPS."""


# --- the server answered with an error ---------------------------------------------------------


class ApiError(CompsError):
    """The server answered 4xx/5xx. ``message`` is its ResponseMessage; quote ``correlation_id``
    when asking COMPS support about the failure."""

    hint = "Check the request; the server's message says what it rejected."

    def __init__(
        self,
        status: int,
        message: str,
        *,
        correlation_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        method: str | None = None,
        url: str | None = None,
        retry_after_s: float | None = None,
        hint: str | None = None,
    ) -> None:
        if hint is not None:  # what to do about this one, where the status's hint would mislead
            self.hint = hint
        self.status = status
        self.retry_after_s = retry_after_s
        self.message = message
        self.correlation_id = correlation_id
        self.details: dict[str, Any] = dict(details or {})
        self.method = method
        self.url = url
        where = f" ({method} {url})" if method and url else ""
        cid = f" (CorrelationId = {correlation_id})" if correlation_id else ""
        super().__init__(f"{status} {message}{cid}{where}. {self.hint}")


class AuthenticationError(ApiError):
    """401/403: credentials or token were rejected."""

    hint = "Log in again (comps-async login) or pass a valid token/username and password."


class NotFoundError(ApiError):
    """404: the id is unknown to the server or the entity was deleted."""

    hint = "Check the id and the entity type (a simulation id is not an experiment id)."


class ConflictError(ApiError):
    """409: the request is not allowed in the entity's current state."""

    hint = "Refresh the entity and check its state before retrying."


class RateLimitedError(ApiError):
    """429 that outlasted the retry policy."""

    hint = "Lower the concurrency or raise RetryPolicy(max_attempts=...)."


class ServerError(ApiError):
    """5xx that outlasted the retry policy."""

    hint = (
        "The server is failing; retry later. A create that failed this way may have happened: "
        "the SDK's saves find out before re-sending."
    )


def error_for_status(status: int) -> type[ApiError]:
    """The most specific ApiError subclass for an HTTP status."""
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitedError
    if status >= 500:
        return ServerError
    return ApiError


# --- content and transfers ---------------------------------------------------------------------


class MissingAssetsError(CompsError):
    """A save referenced file content (by md5) that the server does not have and the SDK cannot
    upload because it only knows the md5. ``references`` maps each md5 to the files/entities that
    use it."""

    def __init__(
        self, md5s: Sequence[UUID], references: Mapping[UUID, Sequence[str]] | None = None
    ) -> None:
        self.md5s = list(md5s)
        self.references = {k: list(v) for k, v in (references or {}).items()}
        lines = [
            f"  {m}: {', '.join(self.references.get(m, [])) or '(unknown file)'}" for m in self.md5s
        ]
        super().__init__(
            f"the server does not have {len(self.md5s)} file(s) that were given by md5 only:\n"
            + "\n".join(lines)
            + "\nAttach their content with from_path()/from_bytes() or upload them first."
        )


class ChecksumMismatchError(CompsError):
    """Bytes on one side do not match the md5 or length on the other. A partial download is kept
    so that a retry can resume; a failed upload registers nothing."""

    def __init__(self, what: str, *, expected: str, actual: str) -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{what}: expected {expected}, got {actual}. The content changed or was corrupted in "
            "transit; retry, and if it persists check that the source is not being modified."
        )


class BatchSaveError(CompsError):
    """Some batches of a save_all failed for good. ``failed`` holds the entities known not to
    exist; ``unknown`` the ones whose fate the SDK could not learn (the server kept failing while
    it looked), with their keys in ``unknown_keys``; ``errors`` each failed batch's cause;
    ``saved_count`` how many exist on the server (ids assigned in place).

    From a list (any sized collection), ``saved`` lists the saved entities and the ones after
    the failure are in ``failed``: re-running the same call, or
    ``save_all(error.failed + error.unknown)``, finishes the job and never creates anything
    twice. From an iterator or generator, the SDK keeps nothing per entity, so ``saved`` is
    empty and the rest of the iterator is left unread from position ``unsent_from``: run the
    same generator again from the start with the same ``key=`` (entities that landed are found
    by their keys, not created twice)."""

    def __init__(
        self,
        saved: Sequence[Any],
        failed: Sequence[Any],
        errors: Sequence[BaseException],
        unknown: Sequence[Any] = (),
        *,
        saved_count: int | None = None,
        unsent_from: int | None = None,
    ) -> None:
        self.saved = list(saved)
        self.saved_count = len(self.saved) if saved_count is None else saved_count
        self.unsent_from = unsent_from
        self.failed = list(failed)
        self.unknown = list(unknown)
        self.unknown_keys = [getattr(e, "idempotency_key", None) for e in self.unknown]
        self.errors = list(errors)
        first = f" First error: {self.errors[0]}" if self.errors else ""
        maybe = (
            f", {len(self.unknown)} unknown (the server may have created them)"
            if self.unknown
            else ""
        )
        rest = (
            f", the iterator left unread from position {unsent_from}"
            if unsent_from is not None
            else ""
        )
        how = (
            "Run the same generator again with the same key= to finish"
            if unsent_from is not None
            else "Run the same save_all again (or save_all(error.failed + error.unknown)) to finish"
        )
        super().__init__(
            f"{self.saved_count} saved, {len(self.failed)} not saved{maybe}{rest}. {how}: "
            f"entities that landed are found by their keys, not created twice.{first}"
        )


class OutcomeUnknownError(CompsError):
    """A create failed in a way that leaves its outcome unknown (the answer was lost and the
    server could not be asked whether it happened). ``key`` is the entity's idempotency key:
    calling the same create again with the same object (or the same ``key=``) returns the
    entity if it exists and creates it otherwise."""

    def __init__(self, what: str, *, key: str | None, cause: BaseException) -> None:
        self.key = key
        self.cause = cause
        super().__init__(
            f"{what} may or may not have been created (key {key}): {cause}. Call the same "
            "create again with the same object or key to finish without a duplicate."
        )


class KeyConflictError(CompsError):
    """An idempotency key passed as ``key=`` already names a different entity on the server
    (another name): the key was reused for other work. Use a new key for new work."""

    def __init__(self, key: str, *, existing_id: str, existing: str, ours: str) -> None:
        self.key = key
        self.existing_id = existing_id
        super().__init__(
            f"key {key!r} already names {existing!r} ({existing_id}), not {ours!r}: a key "
            "stands for one list of entities; pass a new key for new work."
        )


class MalformedResponseError(CompsError):
    """A 2xx answer whose body is not what the protocol says (not JSON, wrong shape, wrong
    count). A save answered this way may have happened, so saves look before re-sending."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(f"malformed answer: {message}{f' ({url})' if url else ''}")


class TransferError(CompsError):
    """The connection to the server failed after the retries, or a transfer could not finish."""

    hint = "Check that the server is reachable, then run it again."

    def __init__(self, message: str, *, url: str | None = None, hint: str | None = None) -> None:
        self.url = url
        if hint is not None:
            self.hint = hint
        super().__init__(f"{message}{f' ({url})' if url else ''}. {self.hint}")


RESUMES = "Check that the server is reachable; a retry resumes where this stopped."


class DeadlineExceededError(TransferError):
    """A call did not finish within its deadline, retries and waits included (a server that
    drips bytes, stalls, or keeps answering 429/503). What was transferred is kept for a
    retry to resume."""

    hint = RESUMES


# --- from HTTP to this tree: the one place that maps responses and httpx errors ---------------


def api_error(response: httpx.Response) -> ApiError:
    """The typed error for a 3xx/4xx/5xx answer, with ResponseMessage and CorrelationId (§3.3).
    The body must have been read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text[:200].strip() if response.content else ""
        body = {"ResponseMessage": text or response.reason_phrase}
    message = str(body.get("ResponseMessage") or response.reason_phrase)
    if 300 <= response.status_code < 400:
        message = f"unexpected redirect to {response.headers.get('location', '?')}"
    return error_for_status(response.status_code)(
        response.status_code,
        message,
        correlation_id=str(body.get("CorrelationId") or "") or None,
        details={k: v for k, v in body.items() if k not in ("ResponseMessage", "CorrelationId")},
        method=response.request.method,
        url=str(response.request.url.copy_with(query=None)),
        retry_after_s=retry_after_s(response),
    )


def transfer_error(request: httpx.Request, exc: httpx.TransportError) -> TransferError:
    """The typed error for a connection that failed."""
    if isinstance(exc, httpx.TimeoutException):
        return TransferError(
            f"{request.method} timed out ({type(exc).__name__})", url=str(request.url)
        )
    hint = None
    if request.url.scheme == "https" and any(
        "WRONG_VERSION_NUMBER" in str(cause) for cause in _causes(exc)
    ):
        # The server answered TLS with plain HTTP: a host given without a scheme means https.
        plain = request.url.copy_with(scheme="http", path="/", query=None)
        hint = f"The server speaks plain HTTP: did you mean {str(plain).rstrip('/')}?"
    return TransferError(
        f"{request.method} failed: {type(exc).__name__}: {exc}", url=str(request.url), hint=hint
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (httpx under trio keeps the TLS reason there)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def retry_after_s(response: httpx.Response | None, *, now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait (``Retry-After-Ms``, ``Retry-After`` seconds or
    HTTP-date), or ``None``."""
    if response is None:
        return None
    millis = response.headers.get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000
        except ValueError:
            pass
        else:
            if math.isfinite(seconds):
                return max(seconds, 0.0)
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None  # "nan", "inf": ignored
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
