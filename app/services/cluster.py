"""The nodes of one service on one PostgreSQL: each node's id, roles and heartbeat; the
reaping of runs whose node is gone; and one listening connection per node that carries
what nodes tell each other about runs (events stored, cancel, followed elsewhere,
deleted), fanned out to what waits here.

Messages on the channel (NOTIFY payloads, sent in the sender's transaction, so they are
delivered only if it commits):
    e <run_id>              events of the run were stored (or its ending was written)
    c <run_id>              cancel the run (its owner does)
    f <run_id>              a node follows the run: its owner stores events promptly
    x <tenant_id> [<conversation_id>]   the tenant or conversation was deleted
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from sqlalchemy import delete, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import asyncpg_connect_args
from app.models import Node, Run
from app.models.run import ACTIVE_RUN_STATUSES
from app.services.execute.queue import release_node_queues
from app.services.notices import CHANNEL, notify
from app.services.runs import expire_queued, interrupt_abandoned

log = structlog.get_logger(__name__)

NODE_ID_FILE = "node-id"


def node_id_for(data_dir: Path, configured: str | None) -> str:
    """The node's id: configured, else the one kept in its data directory (made once), so
    a node that restarts on the same data knows its own runs."""
    if configured:
        return configured
    path = data_dir / NODE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        if known := path.read_text().strip():
            return known
    made = f"{socket.gethostname()[:60]}-{secrets.token_hex(4)}"
    path.write_text(made + "\n")
    return made


class Watch:
    """News of one key: a count of pokes, and a wait for the next. A waiter remembers the
    count it last acted on, so a poke that lands while it is busy is not missed."""

    def __init__(self) -> None:
        self.version = 0
        self.users = 0
        self._changed = asyncio.Event()

    def poke(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seen: int, seconds: float) -> None:
        """Until a poke after `seen`, or `seconds` have passed."""
        if self.version != seen:
            return
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), seconds)


class Signals:
    """Wakes what waits on this node for news of a key (a run id): only keys something
    watches are kept."""

    def __init__(self) -> None:
        self._watches: dict[str, Watch] = {}

    @contextlib.contextmanager
    def watching(self, key: str) -> Iterator[Watch]:
        watch = self._watches.setdefault(key, Watch())
        watch.users += 1
        try:
            yield watch
        finally:
            watch.users -= 1
            if not watch.users:
                self._watches.pop(key, None)

    def poke(self, key: str) -> None:
        watch = self._watches.get(key)
        if watch is not None:
            watch.poke()


Handler = Callable[[list[str]], Awaitable[Any] | None]


class Cluster:
    """This node among the others."""

    def __init__(
        self,
        url: URL,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        node_id: str,
        roles: Iterable[str],
        heartbeat_seconds: float,
        timeout_seconds: float,
        queue_timeout_seconds: float,
    ) -> None:
        self.url = url
        self.sessionmaker = sessionmaker
        self.node_id = node_id
        self.roles = sorted(roles)
        self.heartbeat_seconds = heartbeat_seconds
        self.timeout = timedelta(seconds=timeout_seconds)
        # Runs no node took within this long of their request (their job lost) end.
        self.queue_timeout = timedelta(seconds=queue_timeout_seconds + 2 * heartbeat_seconds)
        self.signals = Signals()
        self.handlers: dict[str, Handler] = {"e": lambda words: self.signals.poke(words[0])}
        # What the heartbeat reports of this node: (running, warm, capacity).
        self.load: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        # Called when this node finds it was taken for gone (its runs were interrupted).
        self.on_reaped: Callable[[], None] = lambda: None
        self.listening = False
        # Set once this node is in `nodes`: its worker takes no job before.
        self.registered = asyncio.Event()
        self._recover = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, recover: bool) -> int:
        """Beat and listen; register this node now if the database answers (else the
        heartbeat does, when it does). Returns how many runs registering interrupted."""
        self._recover = recover
        self._tasks = [
            asyncio.create_task(self._beat(), name="node-heartbeat"),
            asyncio.create_task(self._listen(), name="node-listener"),
        ]
        return await self._register()

    async def _register(self) -> int:
        """Enter this node in `nodes`; with recovery on, interrupt the runs its last life
        left and those of nodes whose heartbeat lapsed."""
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                insert(Node)
                .values(node_id=self.node_id, roles=self.roles)
                .on_conflict_do_update(
                    index_elements=[Node.node_id],
                    set_={
                        "roles": self.roles,
                        "started_at": func.now(),
                        "heartbeat_at": func.now(),
                    },
                )
            )
            interrupted = (
                len(await interrupt_abandoned(session, [self.node_id], unqueued=True))
                if self._recover
                else 0
            )
        self.registered.set()
        if self._recover:
            interrupted += await self.reap()
        return interrupted

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with self.sessionmaker() as session, session.begin():
                # The jobs queued for this node (its warm sessions') go to any node.
                await release_node_queues(session, [self.node_id])
                await session.execute(delete(Node).where(Node.node_id == self.node_id))

    async def tell(self, *words: object) -> None:
        """Say something to every node (this one included)."""
        async with self.sessionmaker() as session, session.begin():
            await notify(session, *words)

    async def alive(self, node_id: str | None) -> bool:
        """The node has beaten within the timeout."""
        if node_id is None:
            return False
        if node_id == self.node_id:
            return True
        async with self.sessionmaker() as session:
            found = await session.scalar(
                select(Node.node_id).where(
                    Node.node_id == node_id, Node.heartbeat_at >= func.now() - self.timeout
                )
            )
        return found is not None

    async def reap(self) -> int:
        """Interrupt the runs of nodes whose heartbeat lapsed (or that left no row), each
        node's by one reaper, and forget those nodes."""
        async with self.sessionmaker() as session, session.begin():
            lapsed = list(
                await session.scalars(
                    select(Node.node_id)
                    .where(
                        Node.heartbeat_at < func.now() - self.timeout,
                        Node.node_id != self.node_id,
                    )
                    .with_for_update(skip_locked=True)
                )
            )
            ghosts = list(
                await session.scalars(
                    select(Run.node_id)
                    .distinct()
                    .where(
                        Run.status.in_(ACTIVE_RUN_STATUSES),
                        Run.node_id.is_not(None),
                        ~select(Node.node_id).where(Node.node_id == Run.node_id).exists(),
                    )
                )
            )
            owners = [n for n in {*lapsed, *ghosts} if n is not None]
            expired = await expire_queued(session, self.queue_timeout)
            if not owners:
                return len(expired)
            runs = await interrupt_abandoned(session, owners)
            await release_node_queues(session, owners)
            await session.execute(delete(Node).where(Node.node_id.in_(lapsed)))
        if runs or lapsed:
            log.warning("node_runs_interrupted", nodes=owners, runs=len(runs))
        return len(runs)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                if not self.registered.is_set():
                    await self._register()
                    continue
                running, warm, capacity = self.load()
                async with self.sessionmaker() as session, session.begin():
                    values = {"running": running, "warm": warm, "capacity": capacity}
                    made = await session.scalar(
                        insert(Node)
                        .values(node_id=self.node_id, roles=self.roles, **values)
                        .on_conflict_do_update(
                            index_elements=[Node.node_id],
                            set_={**values, "heartbeat_at": func.now()},
                        )
                        .returning(literal_column("xmax = 0"))
                    )
                if made:  # another node took this one for gone and interrupted its runs
                    log.error("node_was_taken_for_gone", node_id=self.node_id)
                    self.on_reaped()
                await self.reap()
            except Exception:
                log.warning("node_heartbeat_failed", exc_info=True)

    async def _listen(self) -> None:
        """One connection that LISTENs, reconnecting after a failure; while it is down,
        waiters fall back to polling (their waits are bounded)."""
        backoff = 0.5
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(**asyncpg_connect_args(self.url))
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._heard)
                self.listening, backoff = True, 0.5
                await lost.wait()
            except asyncio.CancelledError:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close(timeout=2))
                raise
            except Exception:
                log.warning("node_listener_failed", exc_info=True)
            finally:
                self.listening = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        kind, *words = payload.split()
        handler = self.handlers.get(kind)
        if handler is None or not words:
            return
        outcome = handler(words)
        if outcome is not None:
            task = asyncio.ensure_future(outcome)
            task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("node_message_failed", error=repr(task.exception()))
