"""The two wire formats the CLI reads: Anthropic stream events as SSE, and the same
events wrapped in AWS event-stream frames (Bedrock's invoke-with-response-stream)."""

from __future__ import annotations

import base64
import json
import struct
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

from app.services.execute.offline_model.scenarios import Reply, Text


def message_id() -> str:
    return f"msg_offline_{uuid.uuid4().hex[:20]}"


def stream_events(reply: Reply, model: str, msg_id: str) -> Iterator[dict[str, Any]]:
    """The Messages API stream events of a reply, in order."""
    yield {
        "type": "message_start",
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": reply.usage.start(),
        },
    }
    for index, block in enumerate(reply.blocks):
        if isinstance(block, Text):
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            for chunk in block.chunks:
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": chunk},
                }
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {
                    "type": "tool_use",
                    "id": block.id,
                    "name": block.name,
                    "input": {},
                },
            }
            yield {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(block.input)},
            }
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": reply.usage.output_tokens},
    }
    yield {"type": "message_stop"}


def message(reply: Reply, model: str) -> dict[str, Any]:
    """A complete (non-streamed) Messages API response."""
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.content(),
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": reply.usage.final(),
    }


def sse(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    # Header value type 7 is a string: 2-byte length, then the bytes.
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + struct.pack(">BH", 7, len(raw_value))
        + raw_value
    )


def event_stream_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (lengths + CRC), headers, payload, CRC."""
    encoded_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + encoded_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def bedrock_chunk(event: dict[str, Any]) -> bytes:
    """A Bedrock `chunk` frame carrying one Anthropic stream event, base64 in `bytes`."""
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode()
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return event_stream_frame(headers, payload)
