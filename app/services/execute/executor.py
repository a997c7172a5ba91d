"""The executor owns running agent runs: it starts them as tasks of their own (not of
the request that asked), keeps their live event logs, and stops them, and the warm
sessions they leave, at shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog

from app.services.execute.events import RunEventLog
from app.services.execute.limits import QueueTimeoutError, RunSlots
from app.services.execute.runner import ExecutionContext, end_unstarted, execute_run

log = structlog.get_logger(__name__)

SHUTDOWN_REASON = ("shutdown", "The service shut down before the run finished", True)


class RunExecutor:
    def __init__(
        self, ctx: ExecutionContext, *, max_running: int, max_queued: int, queue_timeout: float
    ) -> None:
        self.ctx = ctx
        self.slots = RunSlots(max_running, max_queued)
        self.queue_timeout = queue_timeout
        self._runs: dict[uuid.UUID, tuple[asyncio.Task[None], RunEventLog]] = {}
        # Set at shutdown: no new run starts. When the stop was asked for.
        self.closing = False
        self._stop_asked: float | None = None

    def stop_taking_runs(self) -> None:
        """A stop was asked for: no new run starts from now on, and the grace period that
        `shutdown` gives running ones counts from now."""
        if self._stop_asked is None:
            self._stop_asked = time.monotonic()
        self.closing = True

    def must_refuse(self, tenant_id: str, tenant_limit: int) -> bool:
        """A new run would have to wait, and the queue is full."""
        return not self.slots.can_start(tenant_id, tenant_limit) and self.slots.queue_full()

    def start(self, run_id: uuid.UUID, tenant_id: str, tenant_limit: int) -> RunEventLog:
        events = RunEventLog(run_id, tenant_id, self.ctx.sessionmaker)
        # A run that slipped in as shutdown began ends at once, saying why.
        work = (
            end_unstarted(self.ctx, run_id, events, error=SHUTDOWN_REASON)
            if self.closing
            else self._run(run_id, tenant_id, tenant_limit, events)
        )
        task = asyncio.create_task(work, name=f"run-{run_id}")
        self._runs[run_id] = (task, events)
        task.add_done_callback(lambda _: self._runs.pop(run_id, None))
        return events

    async def _run(
        self, run_id: uuid.UUID, tenant_id: str, tenant_limit: int, events: RunEventLog
    ) -> None:
        def queued(position: int) -> None:
            message = f"Waiting for a free slot: position {position} in the queue"
            events.emit("progress", {"type": "queued", "message": message, "position": position})

        try:
            await self.slots.acquire(tenant_id, tenant_limit, self.queue_timeout, queued)
        except QueueTimeoutError:
            message = f"No run slot became free within {self.queue_timeout:g} s"
            ending = end_unstarted(self.ctx, run_id, events, error=("queue_timeout", message, True))
            await asyncio.shield(ending)
            return
        except asyncio.CancelledError:
            ending = end_unstarted(
                self.ctx, run_id, events, cancelled=True, error=events.cancel_reason
            )
            await asyncio.shield(ending)
            raise
        try:
            if self.closing:  # it waited in the queue past the stop signal
                await asyncio.shield(end_unstarted(self.ctx, run_id, events, error=SHUTDOWN_REASON))
            else:
                await execute_run(self.ctx, run_id, events)
        finally:
            self.slots.release(tenant_id)

    def live_events(self, run_id: uuid.UUID) -> RunEventLog | None:
        entry = self._runs.get(run_id)
        return entry[1] if entry else None

    async def cancel(self, run_id: uuid.UUID, wait_seconds: float = 10.0) -> bool:
        """Stop a live run: its task is cancelled, which ends the CLI process and records
        the run as cancelled (messages and usage so far kept). False if not live here."""
        entry = self._runs.get(run_id)
        if entry is None:
            return False
        task, events = entry
        if not events.finishing:
            task.cancel()
        await asyncio.wait([task], timeout=wait_seconds)
        return True

    async def shutdown(self, grace_seconds: float) -> None:
        """Take no new runs; let running ones finish for up to `grace_seconds` from when the
        stop was asked for, then cancel the rest, each recorded as cancelled by the
        shutdown; then end the warm sessions."""
        self.stop_taking_runs()
        assert self._stop_asked is not None
        grace_seconds = max(0.0, grace_seconds - (time.monotonic() - self._stop_asked))
        runs = dict(self._runs.values())
        if runs:
            _, pending = await asyncio.wait(runs, timeout=grace_seconds)
            for task in pending:
                if not runs[task].finishing:
                    runs[task].cancel_reason = SHUTDOWN_REASON
                    task.cancel()
            if pending:
                log.info("runs_cancelled_at_shutdown", count=len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        await self.ctx.warm.close_all()
