"""The model's answer on its way to the agent: text deltas that come together are merged,
everything else goes on byte for byte."""

from __future__ import annotations

import orjson
import pytest

from app.services.execute.answer import AnswerStream


def _event(name: str, data: dict[str, object]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data))


def _text(n: int, index: int = 0) -> bytes:
    delta = {"type": "text_delta", "text": f"t{n} "}
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


EVENTS = [
    _event("message_start", {"type": "message_start", "message": {"id": "m"}}),
    _event("content_block_start", {"type": "content_block_start", "index": 0}),
    *(_text(n) for n in range(10)),
    _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
    *(_text(n, index=1) for n in range(10, 13)),
    _event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{"},
        },
    ),
    _event("message_stop", {"type": "message_stop"}),
]
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _dechunk(body: bytes) -> bytes:
    decoded = b""
    while True:
        size, _, body = body.partition(b"\r\n")
        if int(size, 16) == 0:
            assert body == b"\r\n"
            return decoded
        decoded += body[: int(size, 16)]
        body = body[int(size, 16) + 2 :]


def _through(wire: bytes, piece: int) -> bytes:
    answer = AnswerStream(merge=True)
    out = b""
    for start in range(0, len(wire), piece):
        answer.feed(wire[start : start + piece])
        if start % (piece * 7) == 0:
            out += answer.take()  # now and then, as the hold would
    return out + answer.take()


@pytest.mark.parametrize("piece", [1, 37, 100_000])
def test_text_deltas_that_come_together_go_on_as_one(piece: int) -> None:
    wire = CHUNKED + b"".join(_chunk(e) for e in EVENTS) + b"0\r\n\r\n"
    out = _through(wire, piece)
    assert out.startswith(CHUNKED)
    body = _dechunk(out[len(CHUNKED) :])
    blocks = [block + b"\n\n" for block in body.split(b"\n\n") if block]
    # The same text, in order, block by block; everything else as it was.
    texts: dict[int, str] = {}
    for block in blocks:
        data = orjson.loads(block.split(b"data: ", 1)[1])
        if data.get("delta", {}).get("type") == "text_delta":
            texts[data["index"]] = texts.get(data["index"], "") + data["delta"]["text"]
    assert texts == {0: "".join(f"t{n} " for n in range(10)), 1: "t10 t11 t12 "}
    others = [e for e in EVENTS if b"text_delta" not in e]
    assert [b for b in blocks if b"text_delta" not in b] == others
    if piece == 100_000:  # all at once: one delta per block
        assert len(blocks) == len(others) + 2


def test_a_whole_body_is_merged_too() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    answer = AnswerStream(merge=True)
    answer.feed(head + b"".join(EVENTS))
    out = answer.take()
    assert out.startswith(head) and out.count(b"event: ") == len(EVENTS) - 11


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 529 Overloaded\r\nContent-Type: text/event-stream\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\n\r\n",
        b"",  # not HTTP at all
    ],
)
def test_anything_else_goes_on_as_it_came(head: bytes) -> None:
    wire = head + b"".join(EVENTS)
    assert _through(wire, 37) == wire


def test_chunks_it_cannot_read_go_on_as_they_came() -> None:
    unreadable = b"zz\r\n" + EVENTS[4] + b"\r\n0\r\n\r\n"
    wire = CHUNKED + _chunk(EVENTS[2]) + _chunk(EVENTS[3]) + unreadable
    out = _through(wire, 100_000)
    assert out.endswith(unreadable)
    read = _dechunk(out[len(CHUNKED) : -len(unreadable)] + b"0\r\n\r\n")
    assert read.count(b"event: ") == 1 and b"t0 t1 " in read


def test_off_it_never_reads() -> None:
    wire = CHUNKED + b"".join(_chunk(e) for e in EVENTS) + b"0\r\n\r\n"
    answer = AnswerStream(merge=False)
    answer.feed(wire)
    assert answer.take() == wire
