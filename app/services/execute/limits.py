"""Concurrency limits for runs, held across every node by counting in PostgreSQL: a global
cap on running runs, each tenant's own cap, and a cap on the runs waiting in the queue.

A run takes its slot by becoming `running` in a transaction that holds one advisory lock
while it counts, so nodes racing for the last slot cannot both take it. A run that does
not fit waits (it is told its place in the queue) until a slot frees anywhere or its
queue timeout, counted from when it was asked for, passes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import psutil
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import TooManyRequestsError
from app.models import Run

# The advisory lock every slot count and claim is made under.
_SLOTS_LOCK = "cmab:run-slots"


class StartGate:
    """At most `limit` agent processes start at once on this node (each start is about a
    CPU-second: started all at once on a small machine they thrash, and starve the
    service's streaming); the others wait their turn in order, told their place."""

    def __init__(self, limit: int) -> None:
        self._gate = asyncio.Semaphore(limit)
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def turn(self, on_wait: Callable[[int], None]) -> AsyncIterator[None]:
        if self._gate.locked():
            self.waiting += 1
            on_wait(self.waiting)
            try:
                await self._gate.acquire()
            finally:
                self.waiting -= 1
        else:
            await self._gate.acquire()
        try:
            yield
        finally:
            self._gate.release()


def lower_priority(pid: int, nice: int) -> None:
    """Every thread of the process `pid` and its descendants at least `nice` (Linux keeps a
    niceness per thread; an agent's children inherit it from the thread that starts them).
    A process gone meanwhile is skipped."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    own = f"/proc/{os.getpid()}/task"
    for process in processes:
        try:
            threads = process.threads()
        except psutil.Error:
            continue
        for thread in threads:
            # A thread id freed and taken again meanwhile, by one of the service's own
            # threads, is left alone (the service could never raise it back).
            if os.path.exists(f"{own}/{thread.id}"):
                continue
            with contextlib.suppress(OSError):
                if os.getpriority(os.PRIO_PROCESS, thread.id) < nice:
                    os.setpriority(os.PRIO_PROCESS, thread.id, nice)


class QueueTimeoutError(Exception):
    """The run waited for a slot longer than the queue timeout."""


class QueueFullError(TooManyRequestsError):
    def __init__(self) -> None:
        super().__init__(
            "Too many runs are waiting for a slot; try again shortly", code="QUEUE_FULL"
        )


async def _lock(session: AsyncSession) -> None:
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(_SLOTS_LOCK))))


async def _running(session: AsyncSession, tenant_id: str) -> tuple[int, int]:
    """Running runs everywhere, and the tenant's."""
    row = (
        await session.execute(
            select(
                func.count(),
                func.count().filter(Run.tenant_id == tenant_id),
            ).where(Run.status == "running")
        )
    ).one()
    return int(row[0]), int(row[1])


async def check_queue_room(
    session: AsyncSession,
    run_id: uuid.UUID,
    tenant_id: str,
    tenant_limit: int,
    global_limit: int,
    max_queued: int,
) -> None:
    """Before a run is queued: 429 QUEUE_FULL when as many other runs wait as the queue
    holds, unless this one fits a free slot now (a tenant whose runs wait on its own
    limit never fills the queue for the others)."""
    await _lock(session)
    running, tenants = await _running(session, tenant_id)
    if running < global_limit and tenants < tenant_limit:
        return
    queued = (
        await session.scalar(
            select(func.count()).where(Run.status == "queued", Run.run_id != run_id)
        )
        or 0
    )
    if queued - max(global_limit - running, 0) >= max_queued:
        raise QueueFullError


async def try_start(
    session: AsyncSession, run_id: uuid.UUID, tenant_id: str, tenant_limit: int, global_limit: int
) -> bool | None:
    """Take a slot for a queued run: it becomes `running`. False when none is free; None
    when the run is no longer queued (cancelled meanwhile)."""
    await _lock(session)
    running, tenants = await _running(session, tenant_id)
    if running >= global_limit or tenants >= tenant_limit:
        status = await session.scalar(select(Run.status).where(Run.run_id == run_id))
        return False if status == "queued" else None
    started = await session.scalar(
        update(Run)
        .where(Run.run_id == run_id, Run.status == "queued")
        .values(status="running", started_at=datetime.now(UTC))
        .returning(Run.run_id)
    )
    return started is not None or None


async def queue_position(session: AsyncSession, created_at: datetime) -> int:
    """A waiting run's place: 1 + the runs queued before it, on every node."""
    ahead = await session.scalar(
        select(func.count()).where(Run.status == "queued", Run.created_at < created_at)
    )
    return int(ahead or 0) + 1
