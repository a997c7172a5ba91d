"""The model's streamed answer on its way to the agent, with the text deltas that come
together merged.

The CLI parses and re-emits every server-sent event of the model's answer (about 1.5 ms
of CPU a text delta, more than anything else it does while streaming), and the service
then handles each as an event of its own. Text deltas of the same block that reach the
egress bridge within one hold are one delta to the agent: the same text, in order, in
fewer events. Only a plain (unencoded) `text/event-stream` answer, whole or chunked, is
read so; anything else (another status, a compressed or sized body, a tunnel, a stream
this cannot parse) goes on byte for byte, as does every event that is not a plain text
delta, or that came split across reads."""

from __future__ import annotations

from typing import Any

import orjson

# A response head longer than this is not parsed: the answer goes on as it is.
MAX_HEAD = 64 * 1024
_DELTA = b"event: content_block_delta\ndata: "


class AnswerStream:
    """Bytes from the model in (`feed`), bytes for the agent out (`take`)."""

    def __init__(self, merge: bool) -> None:
        # None: the head is still coming; "raw": as it is; "chunked" or "whole": read.
        self.mode: str | None = None if merge else "raw"
        self.head = b""
        self.out = bytearray()  # what goes on as it is (the head, a raw answer)
        self.body = bytearray()  # chunked: what is not yet decoded
        self.sse = bytearray()  # decoded, not yet a whole event
        # Whole events in order: bytes as they came, or [index, text] to send merged.
        self.events: list[bytes | list[Any]] = []

    @property
    def pending(self) -> int:
        return len(self.out) + len(self.sse) + len(self.events) * 64

    def feed(self, data: bytes) -> None:
        if self.mode is None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD or not b"HTTP/1.".startswith(self.head[:7]):
                    self._raw(self.head)
                    self.head = b""
                return
            head, data = self.head[: end + 4], self.head[end + 4 :]
            self.head = b""
            self.mode = _mode(head)
            self.out += head
        if self.mode == "raw":
            self.out += data
        elif self.mode == "whole":
            self.sse += data
        elif self.mode == "chunked":
            self.body += data
            self._decode()
        self._split()

    def take(self) -> bytes:
        """What the agent gets now: everything fed so far, merged where it could be."""
        payload = b"".join(
            _delta(event) if isinstance(event, list) else event for event in self.events
        ) + bytes(self.sse)
        self.events.clear()
        self.sse.clear()
        if self.mode == "chunked" and payload:
            payload = b"%x\r\n%s\r\n" % (len(payload), payload)
        out = bytes(self.out) + payload
        self.out.clear()
        return out

    def _raw(self, data: bytes) -> None:
        """From here on, bytes go on as they come (after what was read so far)."""
        self.out += self.take()
        self.mode = "raw"
        self.out += data

    def _decode(self) -> None:
        while self.body and self.mode == "chunked":
            line_end = self.body.find(b"\r\n")
            if line_end < 0:
                if len(self.body) > 1024:
                    self._unparsed()
                return
            try:
                size = int(bytes(self.body[:line_end]).split(b";", 1)[0], 16)
            except ValueError:
                self._unparsed()
                return
            if size == 0:  # the last chunk: it and its trailers go on as they are
                self._unparsed()
                return
            start, end = line_end + 2, line_end + 2 + size
            if len(self.body) < end + 2:
                return
            if self.body[end : end + 2] != b"\r\n":
                self._unparsed()
                return
            self.sse += self.body[start:end]
            del self.body[: end + 2]

    def _unparsed(self) -> None:
        """What was decoded goes on re-chunked, the rest of the body as it is (the last
        chunk, or chunks this cannot read)."""
        self._split()
        rest = bytes(self.body)
        self.body.clear()
        self._raw(rest)

    def _split(self) -> None:
        while (end := self.sse.find(b"\n\n")) >= 0:
            block = bytes(self.sse[: end + 2])
            del self.sse[: end + 2]
            text = _text_delta(block)
            last = self.events[-1] if self.events else None
            if text is None:
                self.events.append(block)
            elif isinstance(last, list) and last[0] == text[0]:
                last[1] += text[1]
            else:
                self.events.append([text[0], text[1]])


def _mode(head: bytes) -> str:
    """How to read the answer whose head this is."""
    lines = head[:-4].split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"200":
        return "raw"
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if not headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        return "raw"
    if headers.get(b"content-encoding", b"identity") != b"identity":
        return "raw"
    encoding = headers.get(b"transfer-encoding")
    if encoding == b"chunked":
        return "chunked"
    if encoding is None and b"content-length" not in headers:
        return "whole"  # the body ends when the connection does
    return "raw"


def _text_delta(block: bytes) -> tuple[int, str] | None:
    """(block index, text) of a plain text delta event; None for any other."""
    if not block.startswith(_DELTA) or block.count(b"\n") != 3:
        return None
    try:
        data = orjson.loads(block[len(_DELTA) : -2])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.keys() != {"type", "index", "delta"}:
        return None
    delta, index = data["delta"], data["index"]
    if (
        data["type"] != "content_block_delta"
        or not isinstance(index, int)
        or not isinstance(delta, dict)
        or delta.keys() != {"type", "text"}
        or delta["type"] != "text_delta"
        or not isinstance(delta["text"], str)
    ):
        return None
    return index, delta["text"]


def _delta(event: list[Any]) -> bytes:
    data = {"type": "content_block_delta", "index": event[0]}
    data["delta"] = {"type": "text_delta", "text": event[1]}
    return _DELTA + orjson.dumps(data) + b"\n\n"
