"""The executor owns this node's runs: it takes them from the queue, has them wait for a
slot under the limits (held across every node), runs them as tasks of their own (not
of the request that asked), keeps their live event logs, and stops them, and the warm
sessions they leave, at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import update

from app.errors import ServiceUnavailableError
from app.models import Run
from app.services.cluster import Cluster
from app.services.execute.events import RunEventLog
from app.services.execute.limits import QueueTimeoutError, queue_position, try_start
from app.services.execute.queue import requeue, unseal
from app.services.execute.record import end_unstarted
from app.services.execute.runner import ExecutionContext, execute_run
from app.services.execute.spec import RunInputs
from app.services.metrics import QUEUE_WAIT
from app.services.secrets import Vault
from app.services.tenants import tenant_settings

log = structlog.get_logger(__name__)

Reason = tuple[str, str, bool]  # error_type, message, recoverable
SHUTDOWN_REASON: Reason = ("shutdown", "The service shut down before the run finished", True)
CONVERSATION_DELETED: Reason = ("deleted", "The conversation was deleted", False)
TENANT_DELETED: Reason = ("deleted", "The tenant was deleted", False)
DELETED: Reason = ("deleted", "The conversation or its tenant was deleted", False)
TAKEN_FOR_GONE: Reason = (
    "interrupted",
    "The node running it was taken for gone (it missed its heartbeats)",
    True,
)
UNREADABLE_INPUTS: Reason = (
    "start_error",
    "The node that took the run cannot read what it carries: every node must share "
    "SECRET_KEY (or SECRETS_KEYS)",
    False,
)
# What waiting runs wait on (poked when a slot frees on any node), and how long each
# wait lasts without a poke.
SLOTS = "slots"
SLOT_POLL_SECONDS = 1.0


class _NoLongerQueued(Exception):
    """The run was cancelled (or ended) while it waited for a slot."""


@dataclass(eq=False)
class _LiveRun:
    task: asyncio.Task[None]
    events: RunEventLog
    conversation_id: uuid.UUID
    # Holds a slot (it runs), or still waits for one.
    granted: bool = False


@dataclass(frozen=True)
class Claim:
    """A queued run this node took from the queue."""

    run_id: uuid.UUID
    tenant_id: str
    conversation_id: uuid.UUID
    created_at: datetime


class RunExecutor:
    """This node's runs: those it claimed from the queue, waiting for a slot or running."""

    def __init__(
        self,
        ctx: ExecutionContext,
        *,
        max_running: int,
        node_max_running: int,
        queue_timeout: float,
        cluster: Cluster,
        vault: Vault,
    ) -> None:
        self.ctx = ctx
        self.max_running = max_running  # across every node
        self.node_max_running = node_max_running
        self.queue_timeout = queue_timeout
        self.cluster = cluster
        self.vault = vault
        self.running = 0  # runs holding a slot here
        # Called when a stop is asked for: this node's worker takes no more jobs.
        self.on_stop: Callable[[], None] | None = None
        self._runs: dict[uuid.UUID, _LiveRun] = {}
        # Set at shutdown: no new run starts. When the stop was asked for.
        self.closing = False
        self._stop_asked: float | None = None
        # What other nodes ask of this one's runs.
        cluster.handlers.update(
            c=lambda words: self.cancel(uuid.UUID(words[0])),
            f=lambda words: self.followed_elsewhere(uuid.UUID(words[0])),
            s=lambda _: cluster.signals.poke(SLOTS),
            x=lambda words: self.end_work_of(
                words[0], uuid.UUID(words[1]) if len(words) > 1 else None, DELETED
            ),
        )
        cluster.load = lambda: (self.running, len(ctx.warm), self.node_max_running)
        cluster.on_reaped = self._taken_for_gone

    def _taken_for_gone(self) -> None:
        """Another node took this one for gone and interrupted its runs: they stop here
        (their records keep `interrupted`)."""
        for live in list(self._runs.values()):
            if not live.events.finishing:
                live.events.cancel_reason = live.events.cancel_reason or TAKEN_FOR_GONE
                live.task.cancel()

    def stop_taking_runs(self) -> None:
        """A stop was asked for: no new run starts from now on, and the grace period that
        `shutdown` gives running ones counts from now."""
        if self._stop_asked is None:
            self._stop_asked = time.monotonic()
        self.closing = True
        if self.on_stop is not None:
            self.on_stop()
        # Runs still waiting for a slot would only wait on: they end now, saying why.
        for live in self._runs.values():
            if not live.granted and live.events.cancel_reason is None:
                live.events.cancel_reason = SHUTDOWN_REASON
                live.task.cancel()

    def check_accepting(self) -> None:
        """503 while this node shuts down, or when it runs agents but cannot jail them."""
        if self.closing:
            raise ServiceUnavailableError("The service is shutting down; try again shortly")
        if "worker" in self.cluster.roles and self.ctx.agent.refusal is not None:
            raise ServiceUnavailableError(
                "Agent runs are off: this host cannot jail agent processes (an operator "
                "must fix that, or set AGENT_SANDBOX=off)"
            )

    async def run_claimed(self, run_id: uuid.UUID, sealed: str | None) -> None:
        """The queue's job for a run, on this node: claim the run (unless it was cancelled
        meanwhile), run it, and return when it has ended."""
        if self.closing:  # the worker is stopping: the run goes back for another node
            await requeue(self.ctx.sessionmaker, run_id, sealed)
            return
        async with self.ctx.sessionmaker() as session, session.begin():
            row = (
                await session.execute(
                    update(Run)
                    .where(Run.run_id == run_id, Run.status == "queued")
                    .values(node_id=self.cluster.node_id)
                    .returning(Run.tenant_id, Run.conversation_id, Run.created_at)
                )
            ).first()
        if row is None:
            return  # cancelled, or ended, before it was claimed
        claim = Claim(run_id, row.tenant_id, row.conversation_id, row.created_at)
        try:
            inputs: RunInputs | None = unseal(self.vault, sealed)
        except Exception:  # sealed by a node with other keys
            log.error("run_inputs_unreadable", run_id=str(run_id))
            inputs = None
        task = self.start(claim, inputs)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:  # the queue's worker was stopped: so is the run
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise

    def start(self, claim: Claim, inputs: RunInputs | None) -> asyncio.Task[None]:
        """`inputs` None: they could not be read here; the run fails, saying so."""
        events = RunEventLog(claim.run_id, claim.tenant_id, self.ctx.sessionmaker)
        task = asyncio.create_task(self._run(claim, events, inputs), name=f"run-{claim.run_id}")
        self._runs[claim.run_id] = _LiveRun(task, events, claim.conversation_id)
        task.add_done_callback(lambda _: self._runs.pop(claim.run_id, None))
        self.cluster.signals.poke(str(claim.run_id))  # a follower here reads it live
        return task

    async def _run(self, claim: Claim, events: RunEventLog, inputs: RunInputs | None) -> None:
        live = self._runs[claim.run_id]
        if inputs is None:
            await end_unstarted(
                self.ctx.sessionmaker, claim.run_id, events, error=UNREADABLE_INPUTS
            )
            return
        try:
            try:
                await self._wait_for_slot(claim, events, live)
            except QueueTimeoutError:
                message = f"No run slot became free within {self.queue_timeout:g} s"
                error = ("queue_timeout", message, True)
                await end_unstarted(self.ctx.sessionmaker, claim.run_id, events, error=error)
                return
            except _NoLongerQueued:
                await events.close()
                return
            except asyncio.CancelledError:
                await end_unstarted(
                    self.ctx.sessionmaker,
                    claim.run_id,
                    events,
                    cancelled=True,
                    error=events.cancel_reason,
                )
                raise
            if self.closing:  # it slipped in, or waited in the queue, past the stop signal
                await end_unstarted(
                    self.ctx.sessionmaker,
                    claim.run_id,
                    events,
                    cancelled=True,
                    error=SHUTDOWN_REASON,
                )
            else:
                await execute_run(self.ctx, claim.run_id, events, inputs)
        finally:
            if live.granted:
                self.running -= 1
                with contextlib.suppress(Exception):  # a slot is free: waiters try again
                    await asyncio.shield(self.cluster.tell("s", "-"))

    async def _wait_for_slot(self, claim: Claim, events: RunEventLog, live: _LiveRun) -> None:
        """Until the run holds a slot (it is `running`): the global and the tenant's limits
        counted across every node, and this node's own."""
        async with self.ctx.sessionmaker() as session:
            tenant_limit = (await tenant_settings(session, claim.tenant_id)).max_concurrent_runs
        deadline = claim.created_at.timestamp() + self.queue_timeout
        told = 0
        with self.cluster.signals.watching(SLOTS) as slots:
            while True:
                seen = slots.version  # a slot freed from here on wakes the wait below
                if time.time() >= deadline:  # a run that waited too long never starts
                    raise QueueTimeoutError
                if await self._take_slot(claim, tenant_limit, live):
                    return
                async with self.ctx.sessionmaker() as session:
                    position = await queue_position(session, claim.created_at)
                if position != told:
                    told = position
                    message = f"Waiting for a free slot: position {position} in the queue"
                    events.emit(
                        "progress", {"type": "queued", "message": message, "position": position}
                    )
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise QueueTimeoutError
                await slots.wait(seen, min(remaining, SLOT_POLL_SECONDS))

    async def _take_slot(self, claim: Claim, tenant_limit: int, live: _LiveRun) -> bool:
        """A slot if one is free here and across the service; _NoLongerQueued if the run
        was cancelled meanwhile."""
        if self.running >= self.node_max_running:
            return False
        self.running += 1  # held while the database is asked
        started = None
        try:
            async with self.ctx.sessionmaker() as session, session.begin():
                started = await try_start(
                    session, claim.run_id, claim.tenant_id, tenant_limit, self.max_running
                )
        finally:
            if started:
                live.granted = True
                QUEUE_WAIT.observe(max(time.time() - claim.created_at.timestamp(), 0))
            else:
                self.running -= 1
        if started is None:
            raise _NoLongerQueued
        return started

    @property
    def waiting(self) -> int:
        """Runs this node took that wait for a slot."""
        return sum(not live.granted for live in self._runs.values())

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
