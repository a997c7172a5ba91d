"""The egress bridge over real sockets: what the jail may send out, and what it may not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.services.execute.egress import EgressBridge, Endpoint

KEY = "sk-the-service-key"


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A model endpoint that records each request head and answers 200."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], heads


@pytest.fixture
async def bridge(tmp_path: Path, upstream: tuple[int, list[bytes]]) -> AsyncIterator[EgressBridge]:
    model = Endpoint.from_url(f"http://127.0.0.1:{upstream[0]}")
    bridge = EgressBridge(
        tmp_path / "egress.sock", model, web_access=True, credentials={"x-api-key": KEY}
    )
    await bridge.start()
    bridge.open = True
    yield bridge
    await bridge.close()


async def _send(bridge: EgressBridge, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(bridge.socket_path))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    except (ConnectionResetError, BrokenPipeError):  # refused before or as it was sent
        return b""
    finally:
        writer.close()


async def test_a_model_request_goes_on_with_the_key(
    bridge: EgressBridge, upstream: tuple[int, list[bytes]]
) -> None:
    request = (
        b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1:41000\r\n"
        b"x-api-key: held-by-the-service\r\nConnection: keep-alive\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    answer = await _send(bridge, request)
    assert answer.endswith(b"\r\n\r\nok")
    (head,) = upstream[1]
    assert f"x-api-key: {KEY}".encode() in head and b"held-by-the-service" not in head
    assert b"Connection: close" in head and b"keep-alive" not in head
    assert head.startswith(b"POST /v1/messages?beta=true HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/files HTTP/1.1\r\nHost: x\r\n\r\n",  # not a model call
        b"GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST http://127.0.0.1:5432/v1/messages HTTP/1.1\r\nHost: x\r\n\r\n",  # absolute
        b"POST /v1/messages HTTP/1.1\r\nHost: x\nx-api-key: mine\r\n\r\n",  # bare LF
        b"POST /v1/messages HTTP/1.1\r\nnot a header\r\n\r\n",
        b"CONNECT 127.0.0.1:5432 HTTP/1.1\r\nHost: x\r\n\r\n",  # a private tunnel
        b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n",
        b"CONNECT [::ffff:127.0.0.1]:8000 HTTP/1.1\r\n\r\n",
    ],
)
async def test_anything_else_is_refused(
    bridge: EgressBridge, upstream: tuple[int, list[bytes]], request_bytes: bytes
) -> None:
    answer = await _send(bridge, request_bytes)
    assert answer.startswith(b"HTTP/1.1 403"), answer
    assert upstream[1] == []


async def test_nothing_goes_out_between_runs(
    bridge: EgressBridge, upstream: tuple[int, list[bytes]]
) -> None:
    breaches: list[str] = []
    bridge.on_breach = breaches.append
    bridge.close_gate()
    answer = await _send(bridge, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer == b"" and upstream[1] == [] and len(breaches) == 1


async def test_a_streamed_answer_reaches_the_agent_in_fewer_writes(tmp_path: Path) -> None:
    """Chunks that follow one another within the hold go on together, in order, and the
    end of the answer after its last byte."""
    chunks = [f"data: {n}\n\n".encode() for n in range(40)]

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.005)
        writer.close()

    server = await asyncio.start_server(stream, "127.0.0.1", 0)
    model = Endpoint.from_url(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    bridge = EgressBridge(tmp_path / "egress.sock", model, web_access=False, hold=0.05)
    await bridge.start()
    bridge.open = True
    try:
        reader, writer = await asyncio.open_unix_connection(str(bridge.socket_path))
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        reads: list[bytes] = []
        while data := await asyncio.wait_for(reader.read(65536), 10):
            reads.append(data)
        writer.close()
    finally:
        await bridge.close()
        server.close()
    assert b"".join(reads).split(b"\r\n\r\n", 1)[1] == b"".join(chunks)
    # 40 chunks 5 ms apart, held up to 50 ms: a handful of writes, not forty.
    assert len(reads) <= 10, len(reads)
