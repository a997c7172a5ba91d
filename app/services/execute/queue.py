"""Runs are dispatched through a PostgreSQL job queue: procrastinate. A stream request
queues a job for its run in the run's own transaction (so a run and its job exist
together or not at all); a worker node claims it (`FOR UPDATE SKIP LOCKED`, woken by
LISTEN/NOTIFY) and hands it to its executor. A conversation's next turn is queued for
the node that holds its warm session, when that node is alive and has room; any worker
takes the rest.

What a run brings in memory only (its MCP servers' credentials, its cost cap) travels in
the job sealed with the service's secrets keys, and the job is deleted once it ends."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import procrastinate
import structlog
from procrastinate.worker import Worker
from psycopg.conninfo import make_conninfo
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import asyncpg_connect_args
from app.models import Node, Run
from app.services.execute.spec import RunInputs
from app.services.mcp.proxy import ServerPlan
from app.services.secrets import Vault

log = structlog.get_logger(__name__)

QUEUE = "runs"
TASK = "run_agent"


def node_queue(node_id: str) -> str:
    """The queue of the runs meant for one node (its warm sessions')."""
    return f"node:{node_id}"


class RunWorker:
    """This node's worker: claims the jobs of the common queue and of its own, and hands
    each run to `run` (the executor, which returns when the run has ended). It starts in
    the background and starts again after a failure (the database down at start, say):
    the node serves meanwhile, and says so on /health/ready."""

    def __init__(
        self,
        url: URL,
        run: Callable[[uuid.UUID, str | None], Awaitable[None]],
        ready: asyncio.Event,
        **worker: Any,
    ) -> None:
        self.app = create_queue_app(url)

        @self.app.task(name=TASK, queue=QUEUE)
        async def run_agent(run_id: str, inputs: str | None = None) -> None:
            await run(uuid.UUID(run_id), inputs)

        self._settings = worker
        self._ready = ready
        self.worker: Worker | None = None
        self._stopping = False
        self.task = asyncio.create_task(self._serve(), name="run-worker")

    @classmethod
    def start(
        cls,
        url: URL,
        run: Callable[[uuid.UUID, str | None], Awaitable[None]],
        *,
        node_id: str,
        concurrency: int,
        heartbeat_seconds: float,
        timeout_seconds: float,
        ready: asyncio.Event,
    ) -> RunWorker:
        """`ready`: set once the node is registered (no job is taken before)."""
        return cls(
            url,
            run,
            ready,
            queues=[QUEUE, node_queue(node_id)],
            name=node_id,
            concurrency=concurrency,
            install_signal_handlers=False,
            delete_jobs="always",
            listen_notify=True,
            # Woken by NOTIFY; this is the fallback.
            fetch_job_polling_interval=2.0,
            update_heartbeat_interval=heartbeat_seconds,
            stalled_worker_timeout=timeout_seconds,
        )

    async def _serve(self) -> None:
        """Run the worker until asked to stop; it stops itself on some failures (its
        heartbeat or listener losing the database): then it starts again."""
        await self._ready.wait()
        backoff = 1.0
        while not self._stopping:
            try:
                await self.app.open_async()
                try:
                    self.worker = Worker(self.app, **self._settings)
                    await self.worker.run()  # type: ignore[no-untyped-call]
                finally:
                    self.worker = None
                    await self.app.close_async()
                if not self._stopping:
                    log.warning("run_worker_stopped_itself")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("run_worker_failed", exc_info=True)
            if not self._stopping:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def stop_taking_jobs(self) -> None:
        self._stopping = True
        if self.worker is not None:
            self.worker.stop()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """After the executor's shutdown: the jobs have ended with their runs."""
        self.stop_taking_jobs()
        if self.worker is None:  # not started (or between attempts): nothing to finish
            self.task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 10)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.warning("run_worker_stop_failed", exc_info=True)
            self.task.cancel()


def create_queue_app(url: URL) -> procrastinate.App:
    args = {k: v for k, v in asyncpg_connect_args(url).items() if v is not None}
    args["dbname"] = args.pop("database", None)
    connector = procrastinate.PsycopgConnector(
        conninfo=make_conninfo(**{k: str(v) for k, v in args.items() if v is not None}),
        min_size=1,
        max_size=4,
    )
    # Each job's start and end is the run's own story, logged by the service.
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    return procrastinate.App(connector=connector)


def seal(vault: Vault, inputs: RunInputs) -> str | None:
    if not inputs.mcp and inputs.cost_cap is None:
        return None
    data = {
        "mcp": [dataclasses.asdict(plan) for plan in inputs.mcp],
        "cost_cap": None if inputs.cost_cap is None else str(inputs.cost_cap),
    }
    return vault.encrypt(json.dumps(data)).decode()


def unseal(vault: Vault, sealed: str | None) -> RunInputs:
    if sealed is None:
        return RunInputs()
    data = json.loads(vault.decrypt(sealed.encode()))
    plans = []
    for plan in data["mcp"]:
        allowed = plan["allowed_tools"]
        plan["allowed_tools"] = tuple(allowed) if allowed is not None else None
        plan["secret_values"] = tuple(plan["secret_values"])
        plans.append(ServerPlan(**plan))
    cap = data["cost_cap"]
    return RunInputs(tuple(plans), cost_cap=Decimal(cap) if cap is not None else None)


async def defer(session: AsyncSession, run: Run, queue: str, sealed: str | None) -> None:
    """Queue the run's job in the session's transaction; the run names it."""
    args = json.dumps({"run_id": str(run.run_id), "inputs": sealed})
    run.job_id = await session.scalar(
        text(
            "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(:queue, :task, 0, NULL, NULL,"
            " CAST(:args AS jsonb), NULL)::procrastinate_job_to_defer_v1]))"
        ),
        {"queue": queue, "task": TASK, "args": args},
    )


async def queue_for(
    session: AsyncSession, conversation_id: uuid.UUID, run_id: uuid.UUID, timeout_seconds: float
) -> str:
    """The node queue of the worker that ran the conversation's last turn (its warm
    session is there) when it is alive and has room; else the common queue."""
    last = (
        await session.execute(
            select(Run.node_id, Run.status)
            .where(Run.conversation_id == conversation_id, Run.run_id != run_id)
            .order_by(Run.created_at.desc())
            .limit(1)
        )
    ).first()
    if last is None or last.node_id is None or last.status != "succeeded":
        return QUEUE
    roomy = await session.scalar(
        select(Node.node_id).where(
            Node.node_id == last.node_id,
            Node.heartbeat_at >= func.now() - func.make_interval(0, 0, 0, 0, 0, 0, timeout_seconds),
            Node.running < Node.capacity,
            Node.roles.contains(["worker"]),
        )
    )
    return node_queue(roomy) if roomy is not None else QUEUE


async def forget_jobs(session: AsyncSession, job_ids: list[int]) -> None:
    """Jobs of runs that ended without them (cancelled while queued, interrupted)."""
    if job_ids:
        await session.execute(
            text("DELETE FROM procrastinate_jobs WHERE id = ANY(:ids)"), {"ids": job_ids}
        )


async def release_node_queues(session: AsyncSession, node_ids: list[str]) -> None:
    """Jobs queued for nodes that are gone go to the common queue."""
    if node_ids:
        await session.execute(
            text(
                "UPDATE procrastinate_jobs SET queue_name = :queue"
                " WHERE status = 'todo' AND queue_name = ANY(:queues)"
            ),
            {"queue": QUEUE, "queues": [node_queue(n) for n in node_ids]},
        )


async def requeue(
    sessionmaker: async_sessionmaker[AsyncSession], run_id: uuid.UUID, sealed: str | None
) -> None:
    """A job a stopping node took: its run, still queued, gets a new job for another."""
    async with sessionmaker() as session, session.begin():
        run = await session.get(Run, run_id, with_for_update=True)
        if run is not None and run.status == "queued":
            await defer(session, run, QUEUE, sealed)
