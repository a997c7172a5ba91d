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
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import TooManyRequestsError
from app.models import Run

log = structlog.get_logger(__name__)

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


# How often kept process trees are checked for what they started since.
KEEP_SECONDS = 1.0


class PriorityKeeper:
    """Keeps each agent's process tree at least as nice as its target: every thread
    (Linux keeps a niceness per thread; a child inherits it from the thread that starts
    it) and every scheduling group that is not the service's own. Where the kernel groups
    sessions (sched_autogroup), a new session is a new group that competes with the whole
    service as an equal, whatever its threads' niceness: the sandbox the CLI runs Bash in
    is one, and so is anything that calls setsid (or the jail itself, where the service
    has a terminal). So a tree is checked when its target changes and every KEEP_SECONDS
    after, until its root process ends: what it starts follows within a second."""

    def __init__(self) -> None:
        # root pid -> (its start time, against a reused pid; the target niceness)
        self._roots: dict[int, tuple[float, int]] = {}
        # What was made nice already, and how nice: (pid, start time), group names.
        self._done: dict[tuple[int, float], int] = {}
        self._groups: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def keep(self, pid: int, nice: int) -> None:
        """From now on, `pid` and what it starts are at least `nice` (never raised back)."""
        try:
            started = psutil.Process(pid).create_time()
        except psutil.Error:
            return
        self._roots[pid] = (started, max(nice, self._roots.get(pid, (0.0, 0))[1]))
        self._changed.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._keep(), name="agent-priorities")

    async def _keep(self) -> None:
        """One sweeper, off the loop: at once when a target changes, else every second."""
        loop = asyncio.get_running_loop()
        while self._roots:
            self._changed.clear()
            try:
                await loop.run_in_executor(None, self.sweep)
            except Exception:
                log.warning("agent_priority_not_lowered", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), KEEP_SECONDS)

    def sweep(self) -> None:
        """Lower what is not yet as nice as its root's target (off the loop: /proc, read
        once a sweep however many trees are kept)."""
        own_group = _autogroup(os.getpid())[0]
        own_threads = f"/proc/{os.getpid()}/task"
        every = {p.pid: p for p in psutil.process_iter(["ppid", "create_time"])}
        children: dict[int, list[psutil.Process]] = defaultdict(list)
        for process in every.values():
            children[process.info["ppid"]].append(process)
        seen: dict[tuple[int, float], int] = {}
        for root, (started, nice) in list(self._roots.items()):
            if root not in every or every[root].info["create_time"] != started:
                self._roots.pop(root, None)  # ended (its pid free, or taken again)
                continue
            tree = [every[root]]
            for process in tree:  # grows as it goes: the root's descendants
                tree.extend(children.get(process.pid, ()))
            for process in tree:
                try:
                    key = (process.pid, process.info["create_time"])
                    if self._done.get(key, -1) >= nice:
                        seen[key] = self._done[key]
                        continue
                    group, group_nice = _autogroup(process.pid)
                    if group not in ("", own_group) and self._groups.get(group, -1) < nice:
                        if group_nice < nice:
                            # Unprivileged, rate-limited machine-wide: tried again next time.
                            Path(f"/proc/{process.pid}/autogroup").write_text(str(nice))
                        self._groups[group] = nice
                    for thread in process.threads():
                        # A thread id freed and taken again meanwhile, by one of the
                        # service's own threads, is left alone (it could never be raised).
                        if os.path.exists(f"{own_threads}/{thread.id}"):
                            continue
                        with contextlib.suppress(OSError):
                            if os.getpriority(os.PRIO_PROCESS, thread.id) < nice:
                                os.setpriority(os.PRIO_PROCESS, thread.id, nice)
                    seen[key] = nice
                except (psutil.Error, OSError):
                    continue
        self._done = seen
        if len(self._groups) > 4 * len(seen) + 64:
            self._groups.clear()  # groups of ended processes; the live ones are rechecked


def _autogroup(pid: int) -> tuple[str, int]:
    """The process's scheduling group ("/autogroup-7 nice 0") and its niceness; ("", 19)
    where there is none to change (no such kernel feature, or the process is gone)."""
    try:
        group, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
        return group, int(nice)
    except (OSError, ValueError):
        return "", 19


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
