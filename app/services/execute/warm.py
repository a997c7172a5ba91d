"""Warm sessions: after a turn, the conversation's connected SDK client (and its CLI
process) stays up for a while, so the next turn skips process start and resume.

At most `max_sessions` are kept; the least recently used goes first, and each is
closed after `idle_seconds` unused. A session is handed out only for the same shape
of process (model, system prompt, tools, limits) and only when it served the
conversation's latest run, so a turn another worker ran is never missed."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import structlog
from claude_agent_sdk import ClaudeSDKClient

from app.services.execute.jail import AgentProcess
from app.services.execute.spec import RunSpec
from app.services.execute.usage import Tokens

log = structlog.get_logger(__name__)

INTERRUPT_SECONDS = 2.0
GONE_REMEMBERED = 10_000
# How often idle sessions are checked for output they should not have.
WATCH_SECONDS = 1.0


@dataclass(eq=False)
class WarmSession:
    client: ClaudeSDKClient
    # The spec the process was started with; a run whose spec has another fingerprint
    # needs another process.
    spec: RunSpec
    # The run it served last, and the SDK session that run ended in.
    last_run_id: uuid.UUID | None = None
    session_id: str | None = None
    # model_usage at the end of its last turn: the CLI counts per process, so a turn's
    # usage is what the next result says minus this.
    usage: dict[str, Tokens] = field(default_factory=dict)
    # Its private files and, when jailed, its egress bridge (whose gate is a run's span).
    process: AgentProcess | None = None
    # A keyed digest of the credentials its MCP connections were made with.
    credentials: str = ""

    def open_gate(self) -> None:
        if self.process is not None and self.process.bridge is not None:
            self.process.bridge.open = True

    def close_gate(self) -> None:
        if self.process is not None and self.process.bridge is not None:
            self.process.bridge.close_gate()

    @property
    def pid(self) -> int | None:
        process = getattr(getattr(self.client, "_transport", None), "_process", None)
        pid = getattr(process, "pid", None)
        return pid if isinstance(pid, int) else None

    def alive(self) -> bool:
        process: Any = getattr(getattr(self.client, "_transport", None), "_process", None)
        return process is not None and process.returncode is None

    def idle(self) -> bool:
        """The process is up, and has said nothing since its last turn ended: output the
        CLI produced on its own while idle would be read as the next turn's."""
        stream: Any = getattr(getattr(self.client, "_query", None), "_message_receive", None)
        unread = stream.statistics().current_buffer_used if stream is not None else 0
        return self.alive() and unread == 0

    async def close(self, *, interrupt: bool = False) -> None:
        """Disconnect, which ends the CLI process; never raises. With `interrupt`, the
        turn in progress is stopped first: the CLI exits at end of input only between
        turns, and would otherwise be waited for, then terminated, seconds later."""
        if interrupt and self.alive():
            try:
                await asyncio.wait_for(self.client.interrupt(), INTERRUPT_SECONDS)
            except Exception:
                log.info("agent_interrupt_failed", exc_info=True)
        try:
            await self.client.disconnect()
        except Exception:
            log.warning("agent_disconnect_failed", exc_info=True)
        if self.process is not None:
            await self.process.close()


class WarmSessions:
    def __init__(self, max_sessions: int, idle_seconds: float) -> None:
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._idle: OrderedDict[str, tuple[WarmSession, asyncio.TimerHandle]] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        # Conversations lately deleted or archived: a session still serving a turn for
        # one of them is closed, not kept, when the turn ends. (A deleted tenant's runs
        # are cancelled first, so no session of it is serving a turn.)
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._watchdog: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._idle)

    def holds(self, conversation_id: str) -> bool:
        return conversation_id in self._idle

    def pids(self) -> list[int]:
        return [pid for session, _ in self._idle.values() if (pid := session.pid) is not None]

    def take(
        self,
        conversation_id: str,
        spec: RunSpec,
        previous_run_id: uuid.UUID | None,
        credentials: str = "",
    ) -> WarmSession | None:
        """The conversation's warm session if it can serve this turn as it is; a session
        that cannot is closed (a fresh process will start)."""
        entry = self._idle.pop(conversation_id, None)
        if entry is None:
            return None
        session, timer = entry
        timer.cancel()
        fits = (
            session.spec.fingerprint() == spec.fingerprint()
            and session.last_run_id == previous_run_id
            and session.session_id == spec.resume
            and session.credentials == credentials
            and session.idle()
        )
        if fits:
            return session
        log.info("warm_session_replaced", conversation_id=conversation_id)
        self.close(session)
        return None

    def put(self, conversation_id: str, session: WarmSession) -> None:
        """Keep a session that just served a turn; the oldest goes if there are too many."""
        if (
            conversation_id in self._gone
            or self._closed
            or self.max_sessions == 0
            or self.idle_seconds == 0
            or not session.idle()
        ):
            self.close(session)
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.idle_seconds, self._expire, conversation_id, session)
        self._idle[conversation_id] = (session, timer)
        if session.process is not None and session.process.bridge is not None:
            session.process.bridge.on_breach = lambda reason: self._breach(
                conversation_id, session, reason
            )
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="warm-watchdog")
        while len(self._idle) > self.max_sessions:
            _, (oldest, oldest_timer) = self._idle.popitem(last=False)
            oldest_timer.cancel()
            log.info("warm_session_evicted")
            self.close(oldest)

    def discard(self, tenant_id: str, conversation_id: str | None = None) -> None:
        """Close the warm sessions of a tenant (or of one of its conversations) that was
        deleted or archived: their processes would only wait to expire."""
        if conversation_id is not None:
            self._gone[conversation_id] = None
            while len(self._gone) > GONE_REMEMBERED:
                self._gone.popitem(last=False)
        for key, (session, timer) in list(self._idle.items()):
            if session.spec.tenant_id == tenant_id and conversation_id in (None, key):
                del self._idle[key]
                timer.cancel()
                self.close(session)

    async def _watch(self) -> None:
        """No agent work happens between runs: an idle process that says anything (a
        turn it started on its own) is ended."""
        while self._idle:
            await asyncio.sleep(WATCH_SECONDS)
            for key, (session, _) in list(self._idle.items()):
                if not session.alive():
                    self._breach(key, session, None)
                elif not session.idle():
                    self._breach(key, session, "the agent produced output between runs")

    def _breach(self, conversation_id: str, session: WarmSession, reason: str | None) -> None:
        """End an idle session that did something between runs (or whose process ended:
        reason None)."""
        if not self._drop(conversation_id, session):
            return
        if reason is None:
            log.info("warm_session_exited", conversation_id=conversation_id)
        else:
            log.warning(
                "agent_active_outside_run",
                conversation_id=conversation_id,
                tenant_id=session.spec.tenant_id,
                reason=reason,
            )

    def _expire(self, conversation_id: str, session: WarmSession) -> None:
        self._drop(conversation_id, session)

    def _drop(self, conversation_id: str, session: WarmSession) -> bool:
        """Close the conversation's idle session if it is still `session`."""
        entry = self._idle.get(conversation_id)
        if entry is None or entry[0] is not session:
            return False
        del self._idle[conversation_id]
        entry[1].cancel()
        self.close(session)
        return True

    def close(self, session: WarmSession, *, interrupt: bool = False) -> asyncio.Task[None]:
        """End the session's process in a task of its own, which shutdown waits for."""
        task = asyncio.create_task(session.close(interrupt=interrupt), name="agent-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return task

    async def closed(self) -> None:
        """Wait until the processes being closed have ended (and their connections)."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def close_all(self) -> None:
        """At shutdown: close every warm session and wait for their processes to end."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        while self._idle:
            _, (session, timer) = self._idle.popitem()
            timer.cancel()
            self.close(session)
        await self.closed()
