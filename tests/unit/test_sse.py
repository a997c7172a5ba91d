"""The SSE framing of a run's events, and the ping after a silence."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from app.api import execute
from app.services.execute.events import RunEventLog


class _NoDatabase:
    """Stands in for the sessionmaker: these tests never flush (the log is not closed)."""


async def test_events_then_ping_on_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "PING_SECONDS", 0.05)
    monkeypatch.setattr(execute, "COALESCE_SECONDS", 0)
    log = RunEventLog(uuid.uuid4(), "acme", _NoDatabase())  # type: ignore[arg-type]
    log._flusher.cancel()
    log.emit("progress", {"type": "setup", "message": "x"})
    log.emit("text_delta", {"text": "hi", "index": 0})
    stream = execute.sse_events(log)
    first = (await anext(stream)).decode()
    assert first.startswith("event: progress\nid: 1\ndata: {")
    assert "event: text_delta\nid: 2\n" in first and first.endswith("\n\n")
    ping = (await asyncio.wait_for(anext(stream), 1)).decode()
    assert ping.startswith("event: ping\ndata: ") and "id:" not in ping
    assert '"seq":2' in ping and '"elapsed_ms"' in ping
    log.emit("done", {"status": "success"})
    done = (await anext(stream)).decode()
    assert done.startswith("event: done\nid: 3\n")
    await stream.aclose()


def test_event_data_carries_seq_timestamp_and_run_id() -> None:
    async def scenario() -> dict[str, Any]:
        log = RunEventLog(uuid.uuid4(), "acme", _NoDatabase())  # type: ignore[arg-type]
        log._flusher.cancel()
        return log.emit("title", {"title": "T"})

    event = asyncio.run(scenario())
    assert event["seq"] == 1 and set(event["data"]) == {"title", "seq", "timestamp", "run_id"}


async def test_a_follower_ahead_of_the_log_waits_for_a_new_event() -> None:
    log = RunEventLog(uuid.uuid4(), "acme", _NoDatabase())  # type: ignore[arg-type]
    log._flusher.cancel()
    waiting = asyncio.create_task(log.after(2, wait_seconds=5))
    await asyncio.sleep(0)
    log.emit("progress", {"type": "setup", "message": "one"})
    log.emit("title", {"title": "two"})
    await asyncio.sleep(0.01)
    assert not waiting.done()  # events 1 and 2 are not news to a follower at seq 2
    log.emit("init", {"session_id": "s"})
    batch = await asyncio.wait_for(waiting, 1)
    assert batch is not None and [e["seq"] for e in batch] == [3]
