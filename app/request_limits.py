"""Request size limits: headers and bodies over their caps are refused before the app.

Headers over MAX_REQUEST_HEADER_BYTES (names and values summed) answer 431. A body
whose Content-Length passes MAX_REQUEST_BODY_BYTES answers 413 at once; one of unknown
length (chunked) is counted as the app reads it, and reading past the cap answers 413,
so the app never holds more than the cap. Only `receive` is wrapped, and only when the
request can carry a body; `send` never is (the SSE streams go out untouched).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.errors import error_response

log = structlog.get_logger(__name__)

# What h11 buffers of a request head besides the header names and values counted here:
# the request line and the ": " and CRLF around each header.
SERVER_HEAD_ALLOWANCE = 16 * 1024
# How long a connection whose head was refused is kept, its input dropped, before closing.
DISCARD_SECONDS = 5.0
_OPTIONAL_WHITESPACE = b" \t"


def server_head_limit(max_header_bytes: int) -> int:
    """The largest request head the HTTP server should buffer (h11's
    `max_incomplete_event_size`): a little over the header cap, so the ASGI check is
    the one that answers for a request just over it."""
    return max_header_bytes + SERVER_HEAD_ALLOWANCE


class RequestBodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes the cap. FastAPI lets an HTTPException
    out of body parsing unchanged, so the app's handler writes the 413 envelope."""

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, _body_too_large(max_body_bytes))


def _body_too_large(max_body_bytes: int) -> str:
    return f"The request body is larger than the limit of {max_body_bytes} bytes"


class _InvalidContentLength(Exception):
    pass


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_header_bytes: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        # A Content-Length with more significant digits than the cap is over it: known
        # without int(), which refuses strings of over 4300 digits anyway.
        self._max_body_digits = len(str(max_body_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        header_bytes = 0
        content_lengths: list[bytes] = []
        has_transfer_encoding = False
        for name, value in scope["headers"]:
            header_bytes += len(name) + len(value)
            if name == b"content-length":
                content_lengths.append(value)
            elif name == b"transfer-encoding":
                has_transfer_encoding = True

        if header_bytes > self.max_header_bytes:
            log.warning("request_headers_too_large", header_bytes=header_bytes)
            await _refuse(
                scope,
                receive,
                send,
                431,
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                f"The request headers are larger than the limit of {self.max_header_bytes} bytes",
            )
            return

        if content_lengths:
            try:
                declared = self._declared_length(content_lengths)
            except _InvalidContentLength:
                # Uvicorn already refuses these with a plain 400; this covers other servers.
                await _refuse(
                    scope,
                    receive,
                    send,
                    400,
                    "BAD_REQUEST",
                    "Content-Length must be one non-negative integer",
                )
                return
            if declared > self.max_body_bytes:
                log.warning("request_body_too_large", content_length=declared)
                await _refuse(
                    scope,
                    receive,
                    send,
                    413,
                    "PAYLOAD_TOO_LARGE",
                    _body_too_large(self.max_body_bytes),
                )
                return
            if declared == 0:
                await self.app(scope, receive, send)
                return
        elif not has_transfer_encoding and scope.get("http_version", "1.1") in ("1.0", "1.1"):
            # HTTP/1 without Content-Length or Transfer-Encoding: there is no body.
            await self.app(scope, receive, send)
            return

        # A declared length is held to by the server too; counting it anyway costs one
        # addition per chunk and keeps the cap whatever the server.
        max_body_bytes = self.max_body_bytes
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_bytes:
                    log.warning("request_body_too_large", received_bytes=received)
                    raise RequestBodyTooLarge(max_body_bytes)
            return message

        await self.app(scope, receive_within_limit, send)

    def _declared_length(self, values: list[bytes]) -> int:
        """The body length the request declares, capped at `max_body_bytes + 1`."""
        stripped = {value.strip(_OPTIONAL_WHITESPACE) for value in values}
        if len(stripped) != 1:
            raise _InvalidContentLength
        (value,) = stripped
        if not value.isdigit():  # ASCII digits only, for bytes
            raise _InvalidContentLength
        significant = value.lstrip(b"0")
        if len(significant) > self._max_body_digits:
            return self.max_body_bytes + 1
        return int(significant or b"0")


async def _refuse(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str
) -> None:
    await error_response(status, code, message)(scope, receive, send)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol, which would buffer a request head of any size before
    the app sees it: the bytes that arrive while a head is incomplete are counted, and
    past `head_limit` the connection is answered 431 and closed, so a huge header costs
    no more memory than the limit."""

    head_limit = 64 * 1024 + SERVER_HEAD_ALLOWANCE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        # Refused: what the client still sends is dropped (not buffered) until the
        # connection closes, so it reads the answer rather than a reset.
        self._discarding = False

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.head_limit:
                self._refuse_head()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def _refuse_head(self) -> None:
        log.warning("request_headers_too_large", received_bytes=self._head_bytes)
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # mid-answer to an earlier request: no room for ours
            return
        request_id = uuid.uuid4().hex
        body = json.dumps(
            {
                "error": {
                    "code": "REQUEST_HEADER_FIELDS_TOO_LARGE",
                    "message": "The request headers are larger than the limit",
                    "details": [],
                    "request_id": request_id,
                }
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\nconnection: close\r\n"
            + f"x-request-id: {request_id}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self._discarding = True
        self.loop.call_later(DISCARD_SECONDS, self.transport.close)


def bounded_http_protocol(max_header_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The server's HTTP protocol, stopping request heads a little over the header cap
    (so the ASGI check is the one that answers a request just over it)."""
    return type(
        "BoundedHttpTools",
        (BoundedHttpToolsProtocol,),
        {"head_limit": server_head_limit(max_header_bytes)},
    )
