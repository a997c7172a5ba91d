"""Recording a run: its messages and tool calls as they come, and its end (usage and
cost, the answer, the status), with the events that close its stream."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from claude_agent_sdk import ResultMessage
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import CatalogModel, Conversation, Message, Run, ToolCall, UsageRecord
from app.models.run import ACTIVE_RUN_STATUSES
from app.services.budgets import budget_states, crossed_warning
from app.services.conversations import next_message_seq
from app.services.execute.events import RunEventLog, done_data
from app.services.execute.translate import Output, Translator
from app.services.execute.usage import Tokens, catalog_family, catalog_match
from app.services.metrics import COST, RUNS_ENDED, TOKEN_KINDS, TOKENS
from app.utils.text import storable_text

log = structlog.get_logger(__name__)

Sessionmaker = async_sessionmaker[AsyncSession]
UNSAVED = "The run's records could not be saved"


def mcp_server_of(tool_name: str) -> str | None:
    """`mcp__{server}__{tool}` → server."""
    if not tool_name.startswith("mcp__"):
        return None
    server, sep, _ = tool_name.removeprefix("mcp__").partition("__")
    return server if sep and server else None


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
    # Workspace paths the agent presented to the user (present_files).
    presented: list[str] = field(default_factory=list)

    def finished(self) -> bool:
        """A result came, and the CLI owes no more work for this run: it says it is idle
        (no background task, no injected turn left), or, from a CLI that does not report
        its state, no task is known to run and no notification turn is pending."""
        if self.result is None:
            return False
        if self.session_state is not None:
            return self.session_state == "idle"
        return not self.running_tasks and not self.notification_turn_pending


class RunRecorder:
    """Writes a run's messages and tool calls, each SDK message in one short transaction."""

    def __init__(self, sessionmaker: Sessionmaker, run: Run, next_seq: int) -> None:
        self.sessionmaker = sessionmaker
        self.run = run
        self.next_seq = next_seq

    async def record(self, out: Output) -> None:
        if not (out.messages or out.tool_starts or out.tool_ends):
            return
        async with self.sessionmaker() as session, session.begin():
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
                        mcp_server=mcp_server_of(start.name),
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


def process_usage(result: ResultMessage) -> dict[str, Tokens]:
    """A result's model_usage: what the CLI process has used so far, by model."""
    return {
        name: Tokens.from_model_usage(dict(entry))
        for name, entry in (result.model_usage or {}).items()
    }


def price_of(
    provider_model: str, entry: dict[str, Any], catalog: list[CatalogModel], run_model: CatalogModel
) -> tuple[CatalogModel, str]:
    """The catalog model a served model is priced as, and how it was found: the model
    itself, its family, or (flagged, and logged) the run's own model."""
    exact = catalog_match(provider_model, entry, catalog)
    if exact is not None:
        return exact, "exact"
    family = catalog_family(provider_model, catalog)
    if family is not None:
        return family, "family"
    log.warning("usage_priced_as_run_model", provider_model=provider_model[:200])
    return run_model, "run_model"


def usage_by_model(state: RunState) -> dict[str, tuple[Tokens, dict[str, Any]]]:
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


async def finish_run(
    sessionmaker: Sessionmaker,
    run: Run,
    model: CatalogModel,
    catalog: list[CatalogModel],
    translator: Translator,
    events: RunEventLog,
    state: RunState,
    duration_ms: int,
) -> None:
    """Record how a run that reached the agent ended (usage and cost, the answer or what
    streamed of it, status), then send `context_status` and `done` and close the log.
    Shielded: a cancel that lands meanwhile cannot cut the recording short."""
    events.finishing = True  # before the shielded task starts: no cancel is sent now
    await asyncio.shield(
        _finish(sessionmaker, run, model, catalog, translator, events, state, duration_ms)
    )


async def _finish(
    sessionmaker: Sessionmaker,
    run: Run,
    model: CatalogModel,
    catalog: list[CatalogModel],
    translator: Translator,
    events: RunEventLog,
    state: RunState,
    duration_ms: int,
) -> None:
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
    warnings: list[dict[str, str]] = []
    result_text = (
        storable_text(state.result.result)
        if state.result is not None
        and not state.result.is_error
        and state.result.result is not None
        else None
    )
    session_id = translator.session_id
    turns = state.result.num_turns if state.result is not None else 0
    try:
        usage_rows = []
        for provider_model, (tokens, entry) in usage_by_model(state).items():
            priced_as, pricing = price_of(provider_model, entry, catalog, model)
            row_cost = tokens.cost(priced_as)
            total, cost = total + tokens, cost + row_cost
            usage_rows.append(
                UsageRecord(
                    tenant_id=run.tenant_id,
                    user_id=run.user_id,
                    conversation_id=run.conversation_id,
                    run_id=run.run_id,
                    api_key_id=run.api_key_id,
                    model_id=priced_as.model_id,
                    provider_model=provider_model,
                    pricing=pricing,
                    counts_run=False,
                    cost_usd=row_cost,
                    cache_saved_usd=tokens.cache_saved(priced_as),
                    **{k: v for k, v in tokens.as_dict().items() if k != "total_tokens"},
                )
            )
        if usage_rows:  # the run is counted once: on its own model's record, else the first
            own = [r for r in usage_rows if r.model_id == run.model_id]
            (own or usage_rows)[0].counts_run = True
        async with sessionmaker() as session, session.begin():
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
            # Not over an ending another node wrote (it took this one for gone).
            await session.execute(
                update(Run)
                .where(Run.run_id == run.run_id, Run.status.in_(ACTIVE_RUN_STATUSES))
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
            if cost > 0:
                _, budgets = await budget_states(session, run.tenant_id, run.user_id)
                warnings = crossed_warning(budgets, cost)
        RUNS_ENDED.labels(run_status, state.failure[0] if state.failure else "").inc()
        for row in usage_rows:
            for kind in TOKEN_KINDS:
                if count := getattr(row, f"{kind}_tokens"):
                    TOKENS.labels(row.model_id, kind).inc(count)
            COST.labels(row.model_id).inc(float(row.cost_usd))
    except Exception:
        log.exception("run_finish_failed", run_id=str(run.run_id))
        events.emit(
            "error", {"error_type": "storage_error", "message": UNSAVED, "recoverable": False}
        )
        status = "error"
        # At least the run must not stay active, or its conversation takes no more turns.
        await _mark_ended(
            sessionmaker, run.run_id, status="failed", error_type="storage_error", error=UNSAVED
        )
    for warning in warnings:
        events.emit("budget_warning", dict(warning))
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
    sessionmaker: Sessionmaker,
    run_id: uuid.UUID,
    events: RunEventLog,
    *,
    cancelled: bool = False,
    error: tuple[str, str, bool] | None = None,
) -> None:
    """A run that never reached the agent: cancelled while waiting or starting, timed out
    in the queue, or failed to start. `error` is (error_type, message, recoverable): why
    it failed, or why it was cancelled if not at the user's request.
    Shielded, as finish_run is."""
    events.finishing = True
    await asyncio.shield(_end_unstarted(sessionmaker, run_id, events, cancelled, error))


async def _end_unstarted(
    sessionmaker: Sessionmaker,
    run_id: uuid.UUID,
    events: RunEventLog,
    cancelled: bool,
    error: tuple[str, str, bool] | None,
) -> None:
    why = {"error_type": error[0], "error": error[1]} if error is not None else {}
    status = "cancelled" if cancelled else "failed"
    await _mark_ended(sessionmaker, run_id, status=status, **why)
    RUNS_ENDED.labels(status, error[0] if error is not None else "").inc()
    if error is not None:
        events.emit("error", {"error_type": error[0], "message": error[1], "recoverable": error[2]})
    events.emit("done", done_data("cancelled" if cancelled else "error"))
    await events.close()


async def _mark_ended(sessionmaker: Sessionmaker, run_id: uuid.UUID, **values: Any) -> None:
    """Set a run's ending status (and error) in a transaction of its own; never raises."""
    try:
        async with sessionmaker() as session, session.begin():
            await session.execute(
                update(Run)
                .where(Run.run_id == run_id, Run.status.in_(ACTIVE_RUN_STATUSES))
                .values(finished_at=func.now(), **values)
            )
    except Exception:
        log.exception("run_end_record_failed", run_id=str(run_id))
