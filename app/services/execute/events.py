"""A run's event log: numbers events (seq 1, 2, 3…), hands them to live subscribers at
once, and writes them to run_events in batches off the streaming path."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import RunEvent
from app.services.execute.usage import Tokens
from app.services.metrics import EVENTS
from app.services.notices import notify

log = structlog.get_logger(__name__)

FLUSH_INTERVAL = 0.2
FLUSH_BATCH = 2000
# While another node follows the run: events are stored (and that node told) this soon
# after they come, so following from elsewhere lags by about this much.
PROMPT_FLUSH_INTERVAL = 0.005
# How long a follower's word that it follows holds (it repeats it more often).
FOLLOWED_FOR = 10.0


def done_data(
    status: str,
    *,
    result: str | None = None,
    usage: Tokens | None = None,
    cost_usd: Decimal = Decimal(0),
    turn_count: int = 0,
    duration_ms: int = 0,
    session_id: str | None = None,
) -> dict[str, Any]:
    """The fields of a run's last event, `done`, however the run ended."""
    return {
        "status": status,
        "result": result,
        "usage": (usage or Tokens()).as_dict(),
        "cost_usd": str(cost_usd.quantize(Decimal("0.000001"))),
        "turn_count": turn_count,
        "duration_ms": duration_ms,
        "session_id": session_id,
    }


class RunEventLog:
    def __init__(
        self, run_id: uuid.UUID, tenant_id: str, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> None:
        self.run_id = run_id
        self._run_id_text = str(run_id)
        self.tenant_id = tenant_id
        self.events: list[dict[str, Any]] = []
        self.closed = False
        # The run is recording its end: a cancel now would only cut that short.
        self.finishing = False
        # Why the run is being cancelled, when not at a user's request:
        # (error_type, message, recoverable), recorded with the run and sent as `error`.
        self.cancel_reason: tuple[str, str, bool] | None = None
        self._sessionmaker = sessionmaker
        self._pending: list[dict[str, Any]] = []
        # Set when a follower waits for news; emit() wakes followers only then, so a fast
        # stream does not pay for an asyncio.Event per event.
        self._changed: asyncio.Event | None = None
        self._flush_wanted = asyncio.Event()
        self._followed_until = 0.0
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"run-events-{run_id}")

    def emit(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        """Log an event; `data` becomes the event's own (it is not copied: pass a fresh dict)."""
        seq = len(self.events) + 1
        full = data
        full["seq"] = seq
        full["timestamp"] = datetime.now(UTC).isoformat()
        full["run_id"] = self._run_id_text
        # Encoded once, here: the stream and the database both send these bytes.
        event = {"event": event_type, "seq": seq, "data": full, "json": orjson.dumps(full)}
        self.events.append(event)
        self._pending.append(event)
        EVENTS.inc()
        if len(self._pending) >= FLUSH_BATCH or self._followed_until:
            self._flush_wanted.set()
        self._wake()
        return event

    def followed_elsewhere(self) -> None:
        """Another node follows this run: store events as they come, for a while."""
        self._followed_until = time.monotonic() + FOLLOWED_FOR
        self._flush_wanted.set()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def after(self, seq: int, wait_seconds: float) -> list[dict[str, Any]] | None:
        """The events after `seq`, waiting up to `wait_seconds` for one: [] when none came in
        time, None when the log is closed and has nothing more."""
        deadline = time.monotonic() + wait_seconds
        # A follower that re-attached ahead of the log (seq beyond what exists yet) is woken
        # by events it has already seen: it waits on until one is new to it, or time is up.
        while seq >= len(self.events) and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        if seq < len(self.events):
            return self.events[seq:]
        return None if self.closed else []

    async def close(self) -> None:
        """Write what is pending, stop the flusher, and release the followers."""
        self.closed = True
        self._flush_wanted.set()
        try:
            await self._flusher
            for attempt in range(3):
                try:
                    await self._flush()
                    break
                except Exception:
                    log.exception("run_events_final_flush_failed", run_id=self._run_id_text)
                    await asyncio.sleep(0.5 * (attempt + 1))
        finally:
            self._wake()

    async def _flush_loop(self) -> None:
        while not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wanted.wait(), FLUSH_INTERVAL)
            if self._followed_until:
                if time.monotonic() > self._followed_until:
                    self._followed_until = 0.0
                else:  # gather what comes in the next few milliseconds into this batch
                    await asyncio.sleep(PROMPT_FLUSH_INTERVAL)
            self._flush_wanted.clear()
            try:
                await self._flush()
            except Exception:  # kept pending; the next flush (or close) tries again
                log.exception("run_events_flush_failed", run_id=str(self.run_id))

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        rows = [
            (self.run_id, e["seq"], self.tenant_id, e["event"], e["json"].decode()) for e in batch
        ]
        try:
            async with self._sessionmaker() as session, session.begin():
                # COPY, not INSERT: a stream writes thousands of rows a second, and this is
                # the cheapest way in. A batch that fails is rolled back whole and retried.
                connection = await session.connection()
                raw = await connection.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                await driver.copy_records_to_table(
                    RunEvent.__tablename__,
                    records=rows,
                    columns=["run_id", "seq", "tenant_id", "type", "data"],
                )
                # Followers on other nodes read on when this commits.
                await notify(session, "e", self._run_id_text)
        except BaseException:
            self._pending = batch + self._pending
            raise
