"""What clients send, as the server received it: an ASGI middleware that records requests.

For comparing clients on the wire (``tests/test_wire_parity.py`` holds pyCOMPS and comps_async
side by side) and for a user asking "what did my client send?". Off unless the server is
started with ``LocalComps(record_requests=True)``. A client in another process labels what
follows with ``PUT /_local/wire/mark/<label>`` (answered here, never seen by the app).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MARK_PATH", "RecordedRequest", "WireRecorder"]

MARK_PATH = "/_local/wire/mark/"
# Bodies are kept up to this size (multipart saves of a few hundred small files fit); upload
# chunks (application/octet-stream) are measured, not kept.
MAX_KEPT_BODY = 16 << 20


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived."""

    label: str  # the last mark before it
    method: str
    path: str  # as sent, percent-encoding included
    query: str
    headers: tuple[tuple[str, str], ...]  # lower-case names, in the order sent
    body: bytes  # empty for octet-stream bodies and bodies over MAX_KEPT_BODY
    body_length: int
    status: int  # what the server answered (0: no answer started)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


@dataclass
class WireRecorder:
    """ASGI middleware in front of the local app; ``requests`` grows as requests complete."""

    app: ASGIApp
    requests: list[RecordedRequest] = field(default_factory=list)
    label: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def mark(self, label: str) -> None:
        """Label the requests that follow."""
        self.label = label

    def take(self) -> list[RecordedRequest]:
        """The requests recorded so far, and forget them."""
        with self._lock:
            taken, self.requests = self.requests, []
        return taken

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        if path.startswith(MARK_PATH):
            self.mark(unquote(path.removeprefix(MARK_PATH)))
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = tuple(
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]
        )
        content_type = next((v for k, v in headers if k == "content-type"), "")
        keep = not content_type.startswith("application/octet-stream")
        chunks: list[bytes] = []
        length = 0
        label = self.label

        async def recording_receive() -> Message:
            nonlocal length, keep
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                length += len(body)
                keep = keep and length <= MAX_KEPT_BODY
                if keep:
                    chunks.append(body)
            return message

        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            entry = RecordedRequest(
                label=label,
                method=scope["method"],
                path=path,
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=b"".join(chunks) if keep else b"",
                body_length=length,
                status=status,
            )
            with self._lock:
                self.requests.append(entry)

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Kept before the client can see the answer, so a caller that got its
                # response finds the request here.
                record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, recording_receive, recording_send)
        finally:
            record(0)  # no answer was started
