"""The scripted model server's HTTP face, and a handle to run it in-process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.services.execute.offline_model import wire
from app.services.execute.offline_model.scenarios import SEND_TIME, Reply, plan_reply
from app.utils.ports import free_port

# How a failure status looks on each API (Bedrock names its errors in a header).
_ANTHROPIC_ERRORS = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
_BEDROCK_ERRORS = {
    429: ("ThrottlingException", 429),
    500: ("InternalServerException", 500),
    529: ("ServiceUnavailableException", 503),
}


class DroppedStream(Exception):
    """Raised inside a response body to cut the connection mid-stream."""


async def _dropped() -> AsyncIterator[bytes]:
    raise DroppedStream
    yield b""  # pragma: no cover (makes this an async generator)


def _estimate_tokens(body: dict[str, Any]) -> int:
    return max(1, len(str(body.get("messages", ""))) // 4)


def create_app(
    requests: deque[dict[str, Any]] | None = None,
    plan: Callable[[dict[str, Any]], Reply] = plan_reply,
) -> Starlette:
    """The ASGI app. `requests`, when given, collects every request body it receives."""
    seen: deque[dict[str, Any]] = requests if requests is not None else deque(maxlen=500)

    async def events(reply: Reply, model: str) -> AsyncIterator[dict[str, Any]]:
        sent = 0
        for event in wire.stream_events(reply, model, wire.message_id()):
            if reply.chunk_delay and event["type"] == "content_block_delta":
                await asyncio.sleep(reply.chunk_delay)
            if reply.failure == "drop" and event["type"] == "content_block_delta":
                sent += 1
                if sent > 2:
                    raise DroppedStream
            delta = event.get("delta") or {}
            if SEND_TIME in str(delta.get("text", "")):  # when it was sent, for lag benches
                stamped = delta["text"].replace(SEND_TIME, f"{time.time():.6f}")
                event = {**event, "delta": {**delta, "text": stamped}}
            yield event

    async def anthropic_messages(request: Request) -> Response:
        body = await request.json()
        seen.append({"api": "anthropic", "path": request.url.path, "body": body})
        reply = plan(body)
        model = str(body.get("model", "offline"))
        if isinstance(reply.failure, int):
            kind = _ANTHROPIC_ERRORS.get(reply.failure, "api_error")
            error = {
                "type": "error",
                "error": {"type": kind, "message": f"offline scenario: {reply.failure}"},
            }
            return JSONResponse(error, status_code=reply.failure, headers={"retry-after": "0"})
        if not body.get("stream"):
            if reply.failure == "drop":  # the CLI's non-streaming fallback drops too
                return StreamingResponse(_dropped())
            return JSONResponse(wire.message(reply, model))

        async def body_bytes() -> AsyncIterator[bytes]:
            async for event in events(reply, model):
                yield wire.sse(event)

        return StreamingResponse(body_bytes(), media_type="text/event-stream")

    async def count_tokens(request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"input_tokens": _estimate_tokens(body)})

    async def bedrock_invoke(request: Request) -> Response:
        body = await request.json()
        model = request.path_params["model_id"]
        streaming = request.url.path.endswith("invoke-with-response-stream")
        seen.append({"api": "bedrock", "path": request.url.path, "model": model, "body": body})
        reply = plan(body)
        if isinstance(reply.failure, int):
            name, status = _BEDROCK_ERRORS.get(reply.failure, ("InternalServerException", 500))
            return JSONResponse(
                {"message": f"offline scenario: {reply.failure}"},
                status_code=status,
                headers={
                    "x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"
                },
            )
        if not streaming:
            if reply.failure == "drop":
                return StreamingResponse(_dropped())
            return JSONResponse(wire.message(reply, model))

        async def frames() -> AsyncIterator[bytes]:
            async for event in events(reply, model):
                yield wire.bedrock_chunk(event)

        return StreamingResponse(frames(), media_type="application/vnd.amazon.eventstream")

    async def bedrock_count_tokens(request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"inputTokens": _estimate_tokens(body)})

    async def inference_profiles(_: Request) -> Response:
        return JSONResponse({"inferenceProfileSummaries": []})

    return Starlette(
        routes=[
            Route("/v1/messages", anthropic_messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route(
                "/model/{model_id:path}/invoke-with-response-stream",
                bedrock_invoke,
                methods=["POST"],
            ),
            Route("/model/{model_id:path}/invoke", bedrock_invoke, methods=["POST"]),
            Route("/model/{model_id:path}/count-tokens", bedrock_count_tokens, methods=["POST"]),
            Route("/inference-profiles", inference_profiles, methods=["GET"]),
        ]
    )


class OfflineModelServer:
    """The scripted model server on a free loopback port, in a thread of its own (its
    own event loop, and no signal handlers taken from the service's Uvicorn)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: deque[dict[str, Any]] = deque(maxlen=500)
        self.host = host
        self.port = port or free_port(host)
        self._server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.requests),
                host=host,
                port=self.port,
                log_level="warning",
                lifespan="off",
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="offline-model", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scripted model server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
