"""The executor owns running agent runs: it admits them under the limits, starts them as
tasks of their own (not of the request that asked), keeps their live event logs, and
stops them, and the warm sessions they leave, at shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import structlog

from app.errors import ServiceUnavailableError
from app.services.cluster import Cluster
from app.services.execute.events import RunEventLog
from app.services.execute.limits import Admission, QueueTimeoutError, RunSlots
from app.services.execute.record import end_unstarted
from app.services.execute.runner import ExecutionContext, execute_run
from app.services.execute.spec import RunInputs

log = structlog.get_logger(__name__)

Reason = tuple[str, str, bool]  # error_type, message, recoverable
SHUTDOWN_REASON: Reason = ("shutdown", "The service shut down before the run finished", True)
CONVERSATION_DELETED: Reason = ("deleted", "The conversation was deleted", False)
TENANT_DELETED: Reason = ("deleted", "The tenant was deleted", False)
DELETED: Reason = ("deleted", "The conversation or its tenant was deleted", False)


@dataclass(eq=False)
class _LiveRun:
    task: asyncio.Task[None]
    events: RunEventLog
    conversation_id: uuid.UUID
    admission: Admission


class RunExecutor:
    def __init__(
        self,
        ctx: ExecutionContext,
        *,
        max_running: int,
        max_queued: int,
        queue_timeout: float,
        cluster: Cluster,
    ) -> None:
        self.ctx = ctx
        self.slots = RunSlots(max_running, max_queued)
        self.queue_timeout = queue_timeout
        self.cluster = cluster
        self._runs: dict[uuid.UUID, _LiveRun] = {}
        # Set at shutdown: no new run starts. When the stop was asked for.
        self.closing = False
        self._stop_asked: float | None = None
        # What other nodes ask of this one's runs.
        cluster.handlers.update(
            c=lambda words: self.cancel(uuid.UUID(words[0])),
            f=lambda words: self.followed_elsewhere(uuid.UUID(words[0])),
            x=lambda words: self.end_work_of(
                words[0], uuid.UUID(words[1]) if len(words) > 1 else None, DELETED
            ),
        )
        cluster.load = lambda: (self.slots.running, len(ctx.warm), self.slots.global_limit)

    def stop_taking_runs(self) -> None:
        """A stop was asked for: no new run starts from now on, and the grace period that
        `shutdown` gives running ones counts from now."""
        if self._stop_asked is None:
            self._stop_asked = time.monotonic()
        self.closing = True
        # Runs still waiting for a slot would only wait on: they end now, saying why.
        for live in self._runs.values():
            if live.admission in self.slots.waiting and live.events.cancel_reason is None:
                live.events.cancel_reason = SHUTDOWN_REASON
                live.task.cancel()

    def admit(self, tenant_id: str, tenant_limit: int) -> Admission:
        """Claim a slot or a place in the queue for a run about to be recorded: 503 while
        shutting down, 429 QUEUE_FULL when the queue is full. Pass the admission to
        `start`, or to `withdraw` if the run is not recorded after all."""
        if self.closing:
            raise ServiceUnavailableError("The service is shutting down; try again shortly")
        if self.ctx.agent.refusal is not None:
            raise ServiceUnavailableError(
                "Agent runs are off: this host cannot jail agent processes (an operator "
                "must fix that, or set AGENT_SANDBOX=off)"
            )
        return self.slots.admit(tenant_id, tenant_limit)

    def withdraw(self, admission: Admission) -> None:
        self.slots.release(admission)

    def start(
        self,
        run_id: uuid.UUID,
        conversation_id: uuid.UUID,
        admission: Admission,
        inputs: RunInputs | None = None,
    ) -> RunEventLog:
        """`inputs`: what the run brings in memory only (its MCP credentials)."""
        events = RunEventLog(run_id, admission.tenant_id, self.ctx.sessionmaker)
        self.cluster.signals.poke(str(run_id))
        task = asyncio.create_task(
            self._run(run_id, admission, events, inputs or RunInputs()), name=f"run-{run_id}"
        )
        self._runs[run_id] = _LiveRun(task, events, conversation_id, admission)
        task.add_done_callback(lambda _: self._runs.pop(run_id, None))
        return events

    async def _run(
        self, run_id: uuid.UUID, admission: Admission, events: RunEventLog, inputs: RunInputs
    ) -> None:
        def queued(position: int) -> None:
            message = f"Waiting for a free slot: position {position} in the queue"
            events.emit("progress", {"type": "queued", "message": message, "position": position})

        try:
            try:
                await self.slots.wait(admission, self.queue_timeout, queued)
            except QueueTimeoutError:
                message = f"No run slot became free within {self.queue_timeout:g} s"
                error = ("queue_timeout", message, True)
                await end_unstarted(self.ctx.sessionmaker, run_id, events, error=error)
                return
            except asyncio.CancelledError:
                await end_unstarted(
                    self.ctx.sessionmaker,
                    run_id,
                    events,
                    cancelled=True,
                    error=events.cancel_reason,
                )
                raise
            if self.closing:  # it slipped in, or waited in the queue, past the stop signal
                await end_unstarted(
                    self.ctx.sessionmaker, run_id, events, cancelled=True, error=SHUTDOWN_REASON
                )
            else:
                await execute_run(self.ctx, run_id, events, inputs)
        finally:
            self.slots.release(admission)

    def live_events(self, run_id: uuid.UUID) -> RunEventLog | None:
        live = self._runs.get(run_id)
        return live.events if live else None

    def followed_elsewhere(self, run_id: uuid.UUID) -> None:
        """Another node follows this node's run: its events are stored promptly."""
        live = self._runs.get(run_id)
        if live is not None:
            live.events.followed_elsewhere()

    async def cancel(
        self, run_id: uuid.UUID, *, reason: Reason | None = None, wait_seconds: float = 10.0
    ) -> bool:
        """Stop a live run: its task is cancelled, which ends the CLI process and records
        the run as cancelled (messages and usage so far kept), and wait for that. `reason`
        says why when it is not a user's request. False if it is not live here."""
        live = self._runs.get(run_id)
        if live is None:
            return False
        if not live.events.finishing:
            if reason is not None and live.events.cancel_reason is None:
                live.events.cancel_reason = reason
            live.task.cancel()
        await asyncio.wait([live.task], timeout=wait_seconds)
        return True

    async def cancel_runs_of(
        self, tenant_id: str, conversation_id: uuid.UUID | None, reason: Reason
    ) -> None:
        """Cancel the live runs of a tenant, or of one of its conversations, and wait for
        them to end."""
        runs = [
            run_id
            for run_id, live in self._runs.items()
            if live.events.tenant_id == tenant_id
            and conversation_id in (None, live.conversation_id)
        ]
        await asyncio.gather(*(self.cancel(run_id, reason=reason) for run_id in runs))

    async def end_work_of(
        self, tenant_id: str, conversation_id: uuid.UUID | None, reason: Reason
    ) -> None:
        """A tenant, or one of its conversations, was deleted: cancel what still runs of it
        (started while the delete waited) and close its warm sessions."""
        await self.cancel_runs_of(tenant_id, conversation_id, reason)
        cid = str(conversation_id) if conversation_id else None
        self.ctx.warm.discard(tenant_id, cid)
        self.ctx.cache.forget(tenant_id, cid)

    async def shutdown(self, grace_seconds: float) -> None:
        """Take no new runs; let running ones finish for up to `grace_seconds` from when the
        stop was asked for, then cancel the rest, each recorded as cancelled by the
        shutdown; then end the warm sessions."""
        self.stop_taking_runs()
        assert self._stop_asked is not None
        grace_seconds = max(0.0, grace_seconds - (time.monotonic() - self._stop_asked))
        runs = {live.task: live.events for live in self._runs.values()}
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
