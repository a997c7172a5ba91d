"""Run one agent turn: drive the SDK, translate what it says into events, record
messages, tool calls and usage, and always end the stream with `done`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import structlog
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeSDKClient,
    ResultMessage,
    StreamEvent,
    SystemMessage,
)
from claude_agent_sdk.types import TaskNotificationMessage, TaskStartedMessage
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import CatalogModel, Conversation, Message, Run, Tenant, ToolCall, UsageRecord
from app.schemas.tenants import TenantSettings
from app.services.conversations import next_message_seq
from app.services.execute.events import RunEventLog, done_data
from app.services.execute.options import RunSetup, build_options
from app.services.execute.providers import Provider
from app.services.execute.session_store import PostgresSessionStore
from app.services.execute.translate import Output, Translator
from app.services.execute.usage import Tokens, catalog_match
from app.services.execute.warm import WarmSession, WarmSessions, shape_of

log = structlog.get_logger(__name__)

TITLE_CHARS = 80
# What a model API status means for the client.
_API_ERRORS = {429: ("rate_limited", True), 529: ("overloaded", True), 503: ("overloaded", True)}


@dataclass(frozen=True)
class ExecutionContext:
    """What every run needs from the service."""

    sessionmaker: async_sessionmaker[AsyncSession]
    provider: Provider
    data_dir: Path
    launcher: Path
    session_store: PostgresSessionStore
    max_retries: int
    warm: WarmSessions
    run_timeout: float = 3600.0


@dataclass
class RunState:
    """What a run has seen so far: enough to finish it however it ends."""

    result: ResultMessage | None = None
    failure: tuple[str, str, bool] | None = None  # error_type, message, recoverable
    cancelled: bool = False
    running_tasks: set[str] = field(default_factory=set)
    notification_turn_pending: bool = False
    # Usage seen in the stream, by model: what is counted if no result ever comes.
    streamed: dict[str, Tokens] = field(default_factory=dict)
    streaming_model: str = ""
    counted_messages: set[str | None] = field(default_factory=set)
    # The process's model_usage before this turn (a warm session has served others).
    usage_before: dict[str, Tokens] = field(default_factory=dict)
    # The CLI's session state (running / requires_action / idle), once it reports one.
    session_state: str | None = None

    def finished(self) -> bool:
        """A result came, and the CLI owes no more work for this run: it says it is idle
        (no background task, no injected turn left), or, from a CLI that does not report
        its state, no task is known to run and no notification turn is pending."""
        if self.result is None:
            return False
        if self.session_state is not None:
            return self.session_state == "idle"
        return not self.running_tasks and not self.notification_turn_pending


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


class RunRecorder:
    """Writes a run's messages and tool calls, each SDK message in one short transaction."""

    def __init__(self, ctx: ExecutionContext, run: Run, next_seq: int) -> None:
        self.ctx = ctx
        self.run = run
        self.next_seq = next_seq

    async def record(self, out: Output) -> None:
        if not (out.messages or out.tool_starts or out.tool_ends):
            return
        async with self.ctx.sessionmaker() as session, session.begin():
            for record in out.messages:
                session.add(
                    Message(
                        tenant_id=self.run.tenant_id,
                        conversation_id=self.run.conversation_id,
                        run_id=self.run.run_id,
                        seq=self.next_seq,
                        role=record.role,
                        content=record.content,
                        parent_tool_use_id=record.parent_tool_use_id,
                        sdk_uuid=record.sdk_uuid,
                    )
                )
                self.next_seq += 1
            for start in out.tool_starts:
                session.add(
                    ToolCall(
                        tenant_id=self.run.tenant_id,
                        run_id=self.run.run_id,
                        conversation_id=self.run.conversation_id,
                        tool_use_id=start.tool_use_id,
                        name=start.name,
                        input=start.input,
                        parent_tool_use_id=start.parent_tool_use_id,
                    )
                )
            await session.flush()
            for end in out.tool_ends:
                await session.execute(
                    update(ToolCall)
                    .where(
                        ToolCall.run_id == self.run.run_id, ToolCall.tool_use_id == end.tool_use_id
                    )
                    .values(
                        status="failed" if end.is_error else "succeeded",
                        is_error=end.is_error,
                        output_preview=end.output_preview,
                        finished_at=func.now(),
                    )
                )


@dataclass
class _Start:
    """A run as it begins: what it needs from the database, read in one transaction."""

    run: Run
    conversation: Conversation
    model: CatalogModel
    catalog: list[CatalogModel]
    settings: TenantSettings
    system_prompt: str | None
    next_seq: int
    title: str | None
    previous_run_id: uuid.UUID | None


async def execute_run(ctx: ExecutionContext, run_id: uuid.UUID, events: RunEventLog) -> None:
    """The whole life of a run after it was queued. Never raises but CancelledError."""
    started = time.monotonic()
    state = RunState()
    try:
        begun = await _begin(ctx, run_id)
    except asyncio.CancelledError:
        ending = end_unstarted(ctx, run_id, events, cancelled=True, error=events.cancel_reason)
        await asyncio.shield(ending)
        raise
    except Exception:  # the run could not even start: say so, and mark it failed
        log.exception("run_start_failed", run_id=str(run_id))
        await end_unstarted(
            ctx, run_id, events, error=("start_error", "The run could not start", False)
        )
        return
    run, conversation = begun.run, begun.conversation
    setup = RunSetup(
        tenant_id=run.tenant_id,
        conversation_id=str(conversation.conversation_id),
        system_prompt=begun.system_prompt,
        model=ctx.provider.model_name(begun.model),
        max_turns=begun.settings.max_turns,
        bash_enabled=begun.settings.bash_enabled,
        resume=conversation.sdk_session_id,
    )
    warm = ctx.warm.take(setup.conversation_id, setup, begun.previous_run_id)
    message = "Continuing the agent's session" if warm else "Starting the agent"
    events.emit("progress", {"type": "setup", "message": message})
    if begun.title:
        events.emit("title", {"title": begun.title})
    translator = Translator(setup.conversation_id)
    recorder = RunRecorder(ctx, run, begun.next_seq)
    try:
        await _drive(ctx, setup, run, warm, translator, recorder, events, state)
    except asyncio.CancelledError:
        state.cancelled = True
        events.finishing = True
        await asyncio.shield(_finish(ctx, begun, translator, events, state, started))
        raise
    # Shielded, and marked before the shield's task starts: a cancel that lands while the
    # run is being recorded must not cut it short.
    events.finishing = True
    await asyncio.shield(_finish(ctx, begun, translator, events, state, started))


async def _begin(ctx: ExecutionContext, run_id: uuid.UUID) -> _Start:
    async with ctx.sessionmaker() as session, session.begin():
        run = await session.get_one(Run, run_id, with_for_update=True)
        conversation = await session.get_one(
            Conversation, run.conversation_id, with_for_update=True
        )
        tenant = await session.get_one(Tenant, run.tenant_id)
        catalog = list(await session.scalars(select(CatalogModel)))
        previous_run_id = await session.scalar(
            select(Run.run_id)
            .where(Run.conversation_id == run.conversation_id, Run.run_id != run_id)
            .order_by(Run.created_at.desc())
            .limit(1)
        )
        next_seq = await next_message_seq(session, conversation.conversation_id)
        title = None
        if conversation.title is None:
            title = conversation.title = _title_from(run.user_input)
        run.status = "running"
        run.started_at = datetime.now(UTC)
    return _Start(
        run=run,
        conversation=conversation,
        model=next(m for m in catalog if m.model_id == run.model_id),
        catalog=catalog,
        settings=TenantSettings.model_validate(tenant.settings),
        system_prompt=tenant.system_prompt,
        next_seq=next_seq,
        title=title,
        previous_run_id=previous_run_id,
    )


async def _drive(
    ctx: ExecutionContext,
    setup: RunSetup,
    run: Run,
    warm: WarmSession | None,
    translator: Translator,
    recorder: RunRecorder,
    events: RunEventLog,
    state: RunState,
) -> None:
    """Run the turn on the warm session, or on a new CLI process; keep the session warm
    afterwards if the turn ended well, else end its process."""
    session = warm
    keep = False
    try:
        # However the agent behaves (a notification turn that never comes, say), a run ends.
        async with asyncio.timeout(ctx.run_timeout):
            if session is None:
                options = build_options(
                    setup,
                    data_dir=ctx.data_dir,
                    provider=ctx.provider,
                    launcher=ctx.launcher,
                    session_store=ctx.session_store,
                    max_retries=ctx.max_retries,
                )
                session = WarmSession(ClaudeSDKClient(options), shape_of(setup))
                await session.client.connect()
            state.usage_before = session.usage
            await session.client.query(run.user_input)
            # Closed when the turn ends: the session's next turn reads on from there.
            stream = cast(AsyncGenerator[Any, None], session.client.receive_messages())
            async with aclosing(stream) as messages:
                async for message in messages:
                    out = translator.translate(message)
                    for event_type, data in out.events:
                        events.emit(event_type, data)
                    if out.messages or out.tool_starts or out.tool_ends:
                        await recorder.record(out)
                    _track(message, state)
                    if state.finished():
                        break
        keep = state.finished() and state.failure is None
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        state.failure = ("run_timeout", f"The run took longer than {ctx.run_timeout:g} s", False)
    except Exception:
        # The details (paths, CLI output) go to the log, not to the client.
        log.warning("run_agent_failed", run_id=str(run.run_id), exc_info=True)
        state.failure = ("agent_error", "The agent stopped unexpectedly", False)
    finally:
        if session is not None and keep and state.result is not None:
            session.last_run_id = run.run_id
            session.session_id = translator.session_id
            session.usage = _process_usage(state.result)
            ctx.warm.put(setup.conversation_id, session)
        elif session is not None:
            await asyncio.shield(ctx.warm.close(session, interrupt=True))


def _track(message: Any, state: RunState) -> None:
    if isinstance(message, SystemMessage) and message.subtype == "session_state_changed":
        state.session_state = str(message.data.get("state"))
    elif isinstance(message, StreamEvent) and message.parent_tool_use_id is None:
        event = message.event
        if event.get("type") == "message_start":
            msg = event.get("message", {})
            name = str(msg.get("model", ""))
            state.streamed[name] = state.streamed.get(name, Tokens()) + Tokens.from_api_usage(
                {**(msg.get("usage") or {}), "output_tokens": 0}
            )
            state.streaming_model = name
        elif event.get("type") == "message_delta":
            name = state.streaming_model
            output = int((event.get("usage") or {}).get("output_tokens") or 0)
            state.streamed[name] = state.streamed.get(name, Tokens()) + Tokens(output_tokens=output)
    elif isinstance(message, TaskStartedMessage):
        state.running_tasks.add(str(message.data.get("task_id")))
    elif isinstance(message, TaskNotificationMessage):
        state.running_tasks.discard(str(message.data.get("task_id")))
        state.notification_turn_pending = True
    elif isinstance(message, ResultMessage):
        state.result = message
        origin: Any = message.origin or {}
        if isinstance(origin, dict) and origin.get("kind") == "task-notification":
            state.notification_turn_pending = False
        if message.is_error and state.failure is None:
            state.failure = _result_failure(message)
        elif not message.is_error:
            state.failure = None
    elif (
        isinstance(message, AssistantMessage)
        and message.parent_tool_use_id
        and message.usage
        # One model message arrives as one SDK message per block, each with the same usage.
        and message.message_id not in state.counted_messages
    ):
        # Sub-agent calls are not streamed: their start usage is all there is before a result.
        state.counted_messages.add(message.message_id)
        usage = Tokens.from_api_usage(message.usage)
        state.streamed[message.model] = state.streamed.get(message.model, Tokens()) + usage


def _result_failure(result: ResultMessage) -> tuple[str, str, bool]:
    detail = result.result or "; ".join(result.errors or []) or result.subtype
    if result.api_error_status is not None:
        error_type, recoverable = _API_ERRORS.get(result.api_error_status, ("model_error", False))
        return (
            error_type,
            f"The model API failed ({result.api_error_status}): {detail}",
            recoverable,
        )
    if result.subtype == "error_max_turns":
        return "max_turns", "The run reached the tenant's turn limit", False
    return "model_error", f"The agent could not finish: {detail}", False


def _process_usage(result: ResultMessage) -> dict[str, Tokens]:
    """A result's model_usage: what the CLI process has used so far, by model."""
    return {
        name: Tokens.from_model_usage(dict(entry))
        for name, entry in (result.model_usage or {}).items()
    }


def _usage_by_model(state: RunState) -> dict[str, tuple[Tokens, dict[str, Any]]]:
    """Exact usage from the last result (model_usage counts over the process's life, so
    what it counted before this turn is taken off), else what the stream showed."""
    if state.result is not None and state.result.model_usage:
        usage = {}
        for name, entry in state.result.model_usage.items():
            tokens = Tokens.from_model_usage(dict(entry))
            before = state.usage_before.get(name, Tokens())
            if before.total_tokens <= tokens.total_tokens:  # else the CLI's count restarted
                tokens -= before
            if tokens.total_tokens:
                usage[name] = (tokens, dict(entry))
        return usage
    return {name: (tokens, {}) for name, tokens in state.streamed.items() if tokens.total_tokens}


async def _finish(
    ctx: ExecutionContext,
    begun: _Start,
    translator: Translator,
    events: RunEventLog,
    state: RunState,
    started: float,
) -> None:
    run, model, catalog = begun.run, begun.model, begun.catalog
    events.finishing = True
    duration_ms = int((time.monotonic() - started) * 1000)
    if state.cancelled:
        status, run_status = "cancelled", "cancelled"
        state.failure = events.cancel_reason  # why, if not the user's request
    elif state.failure is not None or state.result is None:
        status, run_status = "error", "failed"
        if state.failure is None:
            state.failure = ("agent_error", "The agent ended without a result", False)
    else:
        status, run_status = "success", "succeeded"
    if state.failure is not None:
        error_type, message, recoverable = state.failure
        events.emit(
            "error", {"error_type": error_type, "message": message, "recoverable": recoverable}
        )

    total, cost = Tokens(), Decimal(0)
    usage_rows = []
    for provider_model, (tokens, entry) in _usage_by_model(state).items():
        priced_as = catalog_match(provider_model, entry, catalog) or model
        row_cost = tokens.cost(priced_as)
        total, cost = total + tokens, cost + row_cost
        usage_rows.append(
            UsageRecord(
                tenant_id=run.tenant_id,
                user_id=run.user_id,
                conversation_id=run.conversation_id,
                run_id=run.run_id,
                model_id=priced_as.model_id,
                provider_model=provider_model,
                cost_usd=row_cost,
                **{k: v for k, v in tokens.as_dict().items() if k != "total_tokens"},
            )
        )
    result_text = (
        state.result.result if state.result is not None and not state.result.is_error else None
    )
    session_id = translator.session_id
    turns = state.result.num_turns if state.result is not None else 0
    try:
        async with ctx.sessionmaker() as session, session.begin():
            session.add_all(usage_rows)
            # What the client saw of an answer cut short is kept, as is a final result.
            endings: list[tuple[str, str | None]] = []
            if status != "success":
                endings.append(("assistant", translator.partial_text))
            endings.append(("result", result_text))
            seq = await next_message_seq(session, run.conversation_id)
            for role, text in endings:
                if text:
                    session.add(
                        Message(
                            tenant_id=run.tenant_id,
                            conversation_id=run.conversation_id,
                            run_id=run.run_id,
                            seq=seq,
                            role=role,
                            content=[{"type": "text", "text": text}],
                        )
                    )
                    seq += 1
            await session.execute(
                update(Run)
                .where(Run.run_id == run.run_id)
                .values(
                    status=run_status,
                    finished_at=func.now(),
                    duration_ms=duration_ms,
                    session_id=session_id,
                    result=result_text,
                    num_turns=turns,
                    error_type=state.failure[0] if state.failure else None,
                    error=state.failure[1] if state.failure else None,
                    cost_usd=cost,
                    **{k: v for k, v in total.as_dict().items() if k != "total_tokens"},
                )
            )
            if session_id:
                await session.execute(
                    update(Conversation)
                    .where(Conversation.conversation_id == run.conversation_id)
                    .values(sdk_session_id=session_id)
                )
    except Exception:
        log.exception("run_finish_failed", run_id=str(run.run_id))
        events.emit(
            "error",
            {
                "error_type": "storage_error",
                "message": "The run's records could not be saved",
                "recoverable": False,
            },
        )
        status = "error"
    context = translator.context_tokens
    percent = round(100 * context / model.context_window, 1) if model.context_window else 0.0
    events.emit(
        "context_status",
        {
            "current_context_tokens": context,
            "max_context_tokens": model.context_window,
            "usage_percent": percent,
            "warning_level": "critical" if percent >= 90 else "warning" if percent >= 70 else "ok",
        },
    )
    events.emit(
        "done",
        done_data(
            status,
            result=result_text,
            usage=total,
            cost_usd=cost,
            turn_count=turns,
            duration_ms=duration_ms,
            session_id=session_id,
        ),
    )
    await events.close()


async def end_unstarted(
    ctx: ExecutionContext,
    run_id: uuid.UUID,
    events: RunEventLog,
    *,
    cancelled: bool = False,
    error: tuple[str, str, bool] | None = None,
) -> None:
    """A run that never reached the agent: cancelled while waiting or starting, timed out
    in the queue, or failed to start. `error` is (error_type, message, recoverable): why
    it failed, or why it was cancelled if not at the user's request."""
    events.finishing = True
    values: dict[str, Any] = {"status": "cancelled" if cancelled else "failed"}
    if error is not None:
        values.update(error_type=error[0], error=error[1])
    try:
        async with ctx.sessionmaker() as session, session.begin():
            await session.execute(
                update(Run).where(Run.run_id == run_id).values(finished_at=func.now(), **values)
            )
    except Exception:
        log.exception("run_end_record_failed", run_id=str(run_id))
    if error is not None:
        events.emit("error", {"error_type": error[0], "message": error[1], "recoverable": error[2]})
    events.emit("done", done_data("cancelled" if cancelled else "error"))
    await events.close()
