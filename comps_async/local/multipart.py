"""Streaming multipart/form-data for the save routes (§8.1), on python-multipart's parser.

Starlette's ``request.form()`` spools every part and returns only when the whole body has
arrived; here each part is handed over as soon as it is complete, so the app hashes and stores
file parts in worker threads while the rest of the body is still arriving.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .store import BadRequest

__all__ = ["Part", "iter_parts"]


@dataclass
class Part:
    """One complete part: its form name, file name (None for a plain field) and bytes."""

    name: str
    filename: str | None
    pieces: list[bytes | memoryview] = field(default_factory=list)

    def content(self) -> bytes:
        """The part's bytes joined (for small parts such as the entity JSON)."""
        return b"".join(self.pieces)


class _Collector:
    """python-multipart callbacks that assemble parts and queue the finished ones."""

    def __init__(self, max_parts: int) -> None:
        self.max_parts = max_parts
        self.finished: deque[Part] = deque()
        self.count = 0
        self.ended = False
        self._part = Part("", None)
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > self.max_parts:
            raise BadRequest(f"too many parts: at most {self.max_parts}")
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise BadRequest('every part needs a Content-Disposition header with a "name"')
        filename = options.get(b"filename")
        self._part = Part(
            name.decode("utf-8", "replace"),
            None if filename is None else filename.decode("utf-8", "replace"),
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        # The received chunk is immutable bytes: keep a view instead of a copy. The parser's
        # own look-behind buffer is a bytearray it reuses, so that one is copied.
        view = memoryview(data)[start:end] if isinstance(data, bytes) else bytes(data[start:end])
        self._part.pieces.append(view)

    def on_part_end(self) -> None:
        self.finished.append(self._part)

    def on_end(self) -> None:
        self.ended = True


async def iter_parts(request: Request, max_parts: int) -> AsyncIterator[Part]:
    """The parts of a multipart/form-data body, each yielded as soon as it is complete."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data without a boundary")
    collector = _Collector(max_parts)
    parser = MultipartParser(
        boundary,
        {  # type: ignore[arg-type]  # python-multipart types its callbacks loosely
            name: getattr(collector, name)
            for name in (
                "on_part_begin",
                "on_header_field",
                "on_header_value",
                "on_header_end",
                "on_headers_finished",
                "on_part_data",
                "on_part_end",
                "on_end",
            )
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            while collector.finished:
                yield collector.finished.popleft()
        parser.finalize()
    except FormParserError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    if not collector.ended:
        raise BadRequest("the multipart body ends before its closing boundary")
    while collector.finished:
        yield collector.finished.popleft()
