"""Run one agent turn: drive the SDK (on a warm session or a new CLI process), translate
what it says into events, have it recorded, and always end the stream with `done`."""

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
from urllib.parse import quote

import structlog
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeSDKClient,
    ResultMessage,
    StreamEvent,
    SystemMessage,
)
from claude_agent_sdk.types import TaskNotificationMessage, TaskStartedMessage
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import PayloadTooLargeError
from app.models import CatalogModel, Conversation, Run, Tenant
from app.schemas.tenants import TenantSettings
from app.services.conversations import next_message_seq
from app.services.execute.cache import WorkspaceCache
from app.services.execute.events import RunEventLog
from app.services.execute.jail import AgentProcess
from app.services.execute.limits import PriorityKeeper, StartGate
from app.services.execute.options import open_agent
from app.services.execute.record import (
    RunRecorder,
    RunState,
    end_unstarted,
    finish_run,
    process_usage,
)
from app.services.execute.skillset import command_prompt, materialise, preferred_note
from app.services.execute.spec import AgentRuntime, RunInputs, RunSpec, workspace_dir
from app.services.execute.sync import manifest_file, sync_down, sync_up
from app.services.execute.tools import agent_tools
from app.services.execute.translate import Translator
from app.services.execute.usage import Tokens, catalog_match
from app.services.execute.warm import WarmSession, WarmSessions
from app.services.scope import TenantScope
from app.services.skills import ActiveSkill, active_skills, parse_command
from app.services.storage import ObjectStore
from app.services.workspace import FileCaps, mark_presented

log = structlog.get_logger(__name__)

TITLE_CHARS = 80
# What a model API status means for the client.
_API_ERRORS = {429: ("rate_limited", True), 529: ("overloaded", True), 503: ("overloaded", True)}


@dataclass(frozen=True)
class ExecutionContext:
    """What every run needs from the service."""

    sessionmaker: async_sessionmaker[AsyncSession]
    agent: AgentRuntime
    warm: WarmSessions
    store: ObjectStore
    file_caps: FileCaps
    cache: WorkspaceCache
    startups: StartGate
    run_timeout: float = 3600.0
    priorities: PriorityKeeper = field(default_factory=PriorityKeeper)


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"


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
    # The tenant's active skills as the run began (their versions recorded on the run).
    skills: list[ActiveSkill]


async def execute_run(
    ctx: ExecutionContext,
    run_id: uuid.UUID,
    events: RunEventLog,
    inputs: RunInputs | None = None,
) -> None:
    """The whole life of a run after it was queued. Never raises but CancelledError, and
    however it ends, its stream ends with `done`."""
    started = time.monotonic()
    state = RunState()
    try:
        begun = await _begin(ctx, run_id)
    except asyncio.CancelledError:
        await end_unstarted(
            ctx.sessionmaker, run_id, events, cancelled=True, error=events.cancel_reason
        )
        raise
    except Exception:  # the run could not even start: say so, and mark it failed
        log.exception("run_start_failed", run_id=str(run_id))
        error = ("start_error", "The run could not start", False)
        await end_unstarted(ctx.sessionmaker, run_id, events, error=error)
        return
    cid = str(begun.conversation.conversation_id)
    translator = Translator(cid)
    try:
        with ctx.cache.hold(begun.run.tenant_id, cid):
            try:
                await _drive(ctx, begun, translator, events, state, inputs or RunInputs())
            except asyncio.CancelledError:
                state.cancelled = True
                raise
            except Exception:  # a fault of ours around the agent: the run still ends, says so
                log.exception("run_failed", run_id=str(run_id))
                state.failure = ("agent_error", "The agent stopped unexpectedly", False)
            finally:
                events.finishing = True  # the run is ending: no cancel is sent from here on
                await asyncio.shield(_record_files(ctx, begun.run, events, state.presented))
                duration_ms = int((time.monotonic() - started) * 1000)
                await finish_run(
                    ctx.sessionmaker,
                    begun.run,
                    begun.model,
                    begun.catalog,
                    translator,
                    events,
                    state,
                    duration_ms,
                )
    finally:
        await asyncio.shield(_settle_cache(ctx, begun.run.tenant_id, cid))


async def _settle_cache(ctx: ExecutionContext, tenant_id: str, conversation_id: str) -> None:
    try:
        await ctx.cache.settle(tenant_id, conversation_id, in_use=ctx.warm.holds)
    except Exception:
        log.exception("workspace_cache_settle_failed", conversation_id=conversation_id)


def _workspace(ctx: ExecutionContext, run: Run) -> tuple[Path, Path]:
    """The run's workspace on this node, and the manifest of what it last synced."""
    data_dir, cid = ctx.agent.data_dir, str(run.conversation_id)
    return workspace_dir(data_dir, run.tenant_id, cid), manifest_file(data_dir, run.tenant_id, cid)


async def _record_files(
    ctx: ExecutionContext, run: Run, events: RunEventLog, presented: list[str]
) -> None:
    """However the run ended, what it changed in the workspace becomes versions of it, said
    in a `files_changed` event; then the files it presented are marked so, each said in a
    `file_presented` event. A failure here is logged: the run's own end goes on."""
    workspace, manifest = _workspace(ctx, run)
    try:
        changes = await sync_up(
            ctx.sessionmaker,
            ctx.store,
            run.tenant_id,
            run.conversation_id,
            workspace,
            manifest,
            run_id=run.run_id,
            user_id=run.user_id,
            caps=ctx.file_caps,
        )
    except PayloadTooLargeError as exc:
        # Nothing of the run's changes is recorded: say why; the files stay on this node.
        events.emit(
            "error",
            {"error_type": exc.code.lower(), "message": exc.message, "recoverable": False},
        )
        return
    except Exception:
        log.exception("workspace_sync_failed", run_id=str(run.run_id))
        return
    if changes:
        events.emit("files_changed", changes.event())
    if not presented:
        return
    try:
        async with ctx.sessionmaker() as session, session.begin():
            files = await mark_presented(
                session, TenantScope(run.tenant_id), run.conversation_id, presented
            )
    except Exception:
        log.exception("present_files_failed", run_id=str(run.run_id))
        return
    for file in files:
        path = quote(file.path)
        download = f"/api/tenants/{run.tenant_id}/conversations/{run.conversation_id}/files/{path}"
        events.emit(
            "file_presented",
            {
                "path": file.path,
                "version": file.current_version,
                "size": file.size,
                "mime_type": file.mime_type,
                "download_path": f"{download}?version={file.current_version}",
            },
        )


async def _begin(ctx: ExecutionContext, run_id: uuid.UUID) -> _Start:
    async with ctx.sessionmaker() as session, session.begin():
        # The conversation is locked before the run, in the order a new turn and a delete
        # take them, so a run starting as its conversation is deleted cannot deadlock.
        conversation_id = await session.scalar(
            select(Run.conversation_id).where(Run.run_id == run_id)
        )
        conversation = await session.get_one(Conversation, conversation_id, with_for_update=True)
        run = await session.get_one(Run, run_id, with_for_update=True)
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
        skills = await active_skills(session, run.tenant_id)
        run.skill_versions = {s.name: s.version for s in skills} or None
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
        skills=skills,
    )


def _unavailable_servers(process: AgentProcess, events: RunEventLog) -> str:
    """Each MCP server that could not be reached is said to the client, and to the agent
    (the run goes on without it)."""
    notes = []
    for name, why in process.mcp_failures:
        message = f"The tool server {name} is unavailable: {why}"
        events.emit("progress", {"type": "mcp_unavailable", "server": name, "message": message})
        notes.append(f"(The tool server {name} is unavailable for this request: {why}.)")
    return "".join(f"{note}\n" for note in notes) + ("\n" if notes else "")


class RunRefusedError(Exception):
    """The run cannot go on as asked (its failure says why, to the client)."""

    def __init__(self, failure: tuple[str, str, bool]) -> None:
        super().__init__(failure[1])
        self.failure = failure


async def _prompt(ctx: ExecutionContext, begun: _Start) -> str:
    """What the agent is sent: the user's words, or for a `/command` the skill's
    instructions with its arguments; preceded by the skills to prefer, if any. The
    run's skills are made ready on this node first."""
    run, text = begun.run, begun.run.user_input
    skillset = None
    if begun.skills:
        skillset = await materialise(ctx.store, ctx.agent.data_dir, run.tenant_id, begun.skills)
    if run.command is not None:
        parsed = parse_command(run.user_input)
        names = {s.name for s in begun.skills}
        if skillset is None or parsed is None or run.command not in names:
            message = f"The skill {run.command} is no longer active"
            raise RunRefusedError(("unknown_command", message, False))
        text = await asyncio.to_thread(command_prompt, skillset, run.command, parsed[1])
    if run.preferred_skills:
        text = preferred_note(run.preferred_skills) + text
    return text


async def _drive(
    ctx: ExecutionContext,
    begun: _Start,
    translator: Translator,
    events: RunEventLog,
    state: RunState,
    inputs: RunInputs,
) -> None:
    """Run the turn on the conversation's warm session, or on a new CLI process; keep the
    session warm afterwards if the turn ended well, else end its process."""
    run, conversation = begun.run, begun.conversation
    spec = RunSpec(
        tenant_id=run.tenant_id,
        conversation_id=str(conversation.conversation_id),
        system_prompt=begun.system_prompt,
        model=ctx.agent.provider.model_name(begun.model),
        model_aliases=ctx.agent.provider.aliases(begun.catalog),
        max_turns=begun.settings.max_turns,
        tools=agent_tools(begun.settings),
        resume=conversation.sdk_session_id,
        skills=tuple((s.name, s.version, s.digest) for s in begun.skills),
        mcp_servers=tuple((p.name, p.digest) for p in inputs.mcp),
        mcp_notes=tuple((p.name, p.description) for p in inputs.mcp if p.description),
        builtin_servers=tuple(
            (p.name, str(p.config["name"])) for p in inputs.mcp if p.type == "builtin"
        ),
    )
    credentials = inputs.credentials()
    session = ctx.warm.take(spec.conversation_id, spec, begun.previous_run_id, credentials)
    keep = False
    try:
        message = "Continuing the agent's session" if session else "Starting the agent"
        events.emit("progress", {"type": "setup", "message": message})
        if begun.title:
            events.emit("title", {"title": begun.title})
        recorder = RunRecorder(ctx.sessionmaker, run, begun.next_seq)
        workspace, manifest = _workspace(ctx, run)
        await sync_down(
            ctx.sessionmaker,
            ctx.store,
            run.tenant_id,
            run.conversation_id,
            workspace,
            manifest,
            conversation.files_version,
        )
        prompt = await _prompt(ctx, begun)
        # However the agent behaves (a notification turn that never comes, say), a run ends.
        async with asyncio.timeout(ctx.run_timeout):
            # The agent may reach its model (and, if allowed, the web) only while a run is open.
            fresh = session is None
            if session is None:
                options, process = await open_agent(ctx.agent, spec, inputs)
                session = WarmSession(
                    ClaudeSDKClient(options), spec, process=process, credentials=credentials
                )
                prompt = _unavailable_servers(process, events) + prompt
            session.open_gate()
            if fresh:  # about a CPU-second: only so many start at once on a node

                def waiting(position: int) -> None:
                    message = f"Waiting for an agent to start: position {position}"
                    events.emit(
                        "progress", {"type": "starting", "message": message, "position": position}
                    )

                async with ctx.startups.turn(waiting):
                    await session.client.connect()
                _keep_nice(ctx, session, ctx.agent.nice)
            state.usage_before = session.usage
            await session.client.query(prompt)
            # Closed when the turn ends: the session's next turn reads on from there.
            stream = cast(AsyncGenerator[Any, None], session.client.receive_messages())
            answering = not fresh  # a warm agent already runs at its answering priority
            async with aclosing(stream) as messages:
                async for message in messages:
                    out = translator.translate(message)
                    for event_type, data in out.events:
                        events.emit(event_type, data)
                        if not answering and event_type == "text_delta":
                            answering = True
                            _keep_nice(ctx, session, ctx.agent.answering_nice)
                    if out.messages or out.tool_starts or out.tool_ends:
                        await recorder.record(out)
                    _track(message, state)
                    if state.finished():
                        break
                    if _over_cap(message, state, inputs.cost_cap, begun):
                        break  # the process is ended below: the turn is not finished
        keep = state.finished() and state.failure is None
    except asyncio.CancelledError:
        raise
    except RunRefusedError as exc:
        state.failure = exc.failure
    except TimeoutError:
        state.failure = ("run_timeout", f"The run took longer than {ctx.run_timeout:g} s", False)
    except Exception:
        # The details (paths, CLI output) go to the log, not to the client.
        log.warning("run_agent_failed", run_id=str(run.run_id), exc_info=True)
        state.failure = ("agent_error", "The agent stopped unexpectedly", False)
    finally:
        if session is not None:
            session.close_gate()
            if session.process is not None and session.process.presenter is not None:
                state.presented = session.process.presenter.take()
        if session is not None and keep and state.result is not None:
            session.last_run_id = run.run_id
            session.session_id = translator.session_id
            session.usage = process_usage(state.result)
            ctx.warm.put(spec.conversation_id, session)
        elif session is not None:
            await asyncio.shield(ctx.warm.close(session, interrupt=True))


def _keep_nice(ctx: ExecutionContext, session: WarmSession, nice: int) -> None:
    """The agent's processes, and what they start, stay at least this nice."""
    if session.pid is not None:
        ctx.priorities.keep(session.pid, nice)


def _over_cap(message: Any, state: RunState, cap: Decimal | None, begun: _Start) -> bool:
    """After each model call: has the run cost more than it may? (Its streamed usage,
    priced as the catalog prices each model; the exact cost is recorded at the end.)"""
    # Checked when a model call of the agent ends, or a sub-agent's call is counted.
    ended = isinstance(message, StreamEvent) and message.event.get("type") == "message_delta"
    subagent = isinstance(message, AssistantMessage) and bool(message.parent_tool_use_id)
    if cap is None or not (ended or subagent):
        return False
    spent = sum(
        (
            tokens.cost(catalog_match(name, {}, begun.catalog) or begun.model)
            for name, tokens in state.streamed.items()
        ),
        Decimal(0),
    )
    if spent <= cap:
        return False
    message_text = f"The run reached its cost limit of {cap.normalize()} USD"
    state.failure = ("budget_exceeded", message_text, False)
    return True


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
