"""Agent runs as the API sees them: starting one on a conversation, and reading it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ConflictError, UnprocessableError
from app.models import Message, Run, RunEvent
from app.models.run import ACTIVE_RUN_STATUSES
from app.schemas.runs import StreamRequest
from app.services.conversations import get_conversation, next_message_seq
from app.services.execute.events import done_data
from app.services.execute.queue import forget_jobs
from app.services.integrity import flush_mapping_violations
from app.services.models import require_model
from app.services.notices import notify
from app.services.scope import TenantScope
from app.services.skills import check_preferred, resolve_command


def _in_progress(run_id: uuid.UUID | None) -> ConflictError:
    return ConflictError(
        "A run is already in progress on this conversation",
        code="RUN_IN_PROGRESS",
        details=[{"run_id": str(run_id)}] if run_id else [],
    )


async def queue_run(
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    body: StreamRequest,
    header_user_id: str | None,
    *,
    max_input_chars: int,
    api_key_id: uuid.UUID | None = None,
    node_id: str | None = None,
) -> Run:
    """Queue a run and record the user's message; the caller commits, then starts it."""
    if not body.user_input.strip():
        raise UnprocessableError("user_input must not be blank")
    if len(body.user_input) > max_input_chars:
        raise UnprocessableError(
            f"user_input is longer than {max_input_chars} characters", code="INPUT_TOO_LONG"
        )
    conversation = await get_conversation(session, scope, conversation_id, for_update=True)
    if conversation.status == "archived":
        raise ConflictError("The conversation is archived", code="CONVERSATION_ARCHIVED")
    await require_model(session, conversation.model_id)
    active = await session.scalar(
        select(Run.run_id).where(
            Run.conversation_id == conversation_id, Run.status.in_(ACTIVE_RUN_STATUSES)
        )
    )
    if active is not None:
        raise _in_progress(active)
    # A `/command` names one of the tenant's skills, and preferred skills are its active
    # ones: else 422 before any run starts.
    command = await resolve_command(session, scope, body.user_input)
    await check_preferred(session, scope, body.preferred_skills)
    executor = body.executor.model_dump(exclude_none=True) if body.executor else None
    user_id = (
        (body.executor.user_id if body.executor else None) or header_user_id or conversation.user_id
    )
    run = Run(
        tenant_id=scope.tenant_id,
        conversation_id=conversation_id,
        user_id=user_id,
        api_key_id=api_key_id,
        node_id=node_id,
        model_id=conversation.model_id,
        user_input=body.user_input,
        executor=executor,
        preferred_skills=body.preferred_skills or None,
        command=command.skill if command else None,
        token_names=sorted(body.tokens) or None,
    )
    session.add(run)
    await flush_mapping_violations(
        session, {"uq_runs_one_active_per_conversation": lambda: _in_progress(None)}
    )
    seq = await next_message_seq(session, conversation_id)
    session.add(
        Message(
            tenant_id=scope.tenant_id,
            conversation_id=conversation_id,
            run_id=run.run_id,
            seq=seq,
            role="user",
            content=[{"type": "text", "text": body.user_input}],
        )
    )
    conversation.updated_at = func.now()
    await session.flush()
    return run


async def get_run(
    session: AsyncSession, scope: TenantScope, run_id: uuid.UUID, *, for_update: bool = False
) -> Run:
    return await scope.get(session, Run, Run.run_id, run_id, resource="Run", for_update=for_update)


async def stored_events(
    session: AsyncSession, scope: TenantScope, run_id: uuid.UUID, after: int
) -> list[RunEvent]:
    """The run's stored events after seq `after`, in order."""
    return list(
        await session.scalars(
            scope.select(RunEvent)
            .where(RunEvent.run_id == run_id, RunEvent.seq > after)
            .order_by(RunEvent.seq)
        )
    )


async def run_state(
    session: AsyncSession, scope: TenantScope, run_id: uuid.UUID
) -> tuple[str, str | None] | None:
    """The run's status and node; None if it is gone (deleted with its conversation)."""
    row = (
        await session.execute(
            select(Run.status, Run.node_id).where(
                Run.run_id == run_id, Run.tenant_id == scope.tenant_id
            )
        )
    ).first()
    return (row.status, row.node_id) if row is not None else None


async def replay_after(
    session: AsyncSession, scope: TenantScope, run_id: uuid.UUID, after: int
) -> list[RunEvent]:
    """An ended run's stored events after seq `after`, in order, and always its `done`:
    also for a client that is past it, or that saw events a crashed process never
    stored (their seqs were then given to the ending recovery wrote)."""
    rows = await stored_events(session, scope, run_id, after)
    if not rows or rows[-1].type != "done":
        done = await session.scalar(
            scope.select(RunEvent)
            .where(RunEvent.run_id == run_id, RunEvent.type == "done")
            .order_by(RunEvent.seq.desc())
            .limit(1)
        )
        if done is not None:
            rows.append(done)
    return rows


def check_cancellable(run: Run) -> None:
    if run.status not in ACTIVE_RUN_STATUSES:
        raise ConflictError(f"The run has already ended ({run.status})", code="RUN_FINISHED")


async def _append_ending(
    session: AsyncSession, run: Run, endings: list[tuple[str, dict[str, Any]]]
) -> None:
    """Add the last events of a run whose executor is gone, after its stored ones (its
    followers, on any node, are told when this commits)."""
    await notify(session, "e", run.run_id)
    last = await session.scalar(
        select(func.coalesce(func.max(RunEvent.seq), 0)).where(RunEvent.run_id == run.run_id)
    )
    now = datetime.now(UTC).isoformat()
    for offset, (kind, data) in enumerate(endings, start=1):
        seq = (last or 0) + offset
        session.add(
            RunEvent(
                run_id=run.run_id,
                seq=seq,
                tenant_id=run.tenant_id,
                type=kind,
                data={**data, "seq": seq, "timestamp": now, "run_id": str(run.run_id)},
            )
        )


async def cancel_orphan(session: AsyncSession, run: Run) -> None:
    """Cancel a run marked active that no executor here runs (its worker is gone): record
    it as cancelled and end its event log, so no client waits for it forever."""
    run.status = "cancelled"
    run.finished_at = func.now()
    await _append_ending(session, run, [("done", done_data("cancelled"))])
    await forget_jobs(session, [run.job_id] if run.job_id is not None else [])
    await session.flush()


async def expire_queued(session: AsyncSession, older_than: timedelta) -> list[uuid.UUID]:
    """Runs that no node took within their queue timeout (their job was lost: a node
    died holding it, say): they fail `queue_timeout`, with `error` and `done`."""
    runs = list(
        await session.scalars(
            select(Run)
            .where(
                Run.status == "queued",
                Run.node_id.is_(None),
                Run.created_at < func.now() - older_than,
            )
            .with_for_update(skip_locked=True)
        )
    )
    message = "No node took the run within the queue timeout"
    return await _end_abandoned(session, runs, "failed", "queue_timeout", message)


async def interrupt_abandoned(
    session: AsyncSession, owners: list[str], *, unqueued: bool = False
) -> list[uuid.UUID]:
    """Runs that nodes which are gone had taken (those of `owners`; with `unqueued`, also
    any that no node took and no job carries, as runs from before the queue): mark them
    interrupted, end their event logs with `error` and `done`, so no client waits for
    them forever, and drop their jobs."""
    orphans = and_(Run.node_id.is_(None), Run.job_id.is_(None)) if unqueued else false()
    runs = list(
        await session.scalars(
            select(Run)
            .where(Run.status.in_(ACTIVE_RUN_STATUSES), or_(Run.node_id.in_(owners), orphans))
            .with_for_update(skip_locked=True)
        )
    )
    message = "The service stopped while the run was in progress"
    return await _end_abandoned(session, runs, "interrupted", "interrupted", message)


async def _end_abandoned(
    session: AsyncSession, runs: list[Run], status: str, error_type: str, message: str
) -> list[uuid.UUID]:
    """End runs no live node will end: their status and error, `error` and `done` after
    their stored events, and their jobs dropped."""
    for run in runs:
        run.status = status
        run.finished_at = func.now()
        run.error_type = error_type
        run.error = message
        await _append_ending(
            session,
            run,
            [
                ("error", {"error_type": error_type, "message": message, "recoverable": True}),
                ("done", done_data("error", session_id=run.session_id)),
            ],
        )
    await forget_jobs(session, [run.job_id for run in runs if run.job_id is not None])
    await session.flush()
    return [run.run_id for run in runs]
