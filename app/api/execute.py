"""Routes of agent runs: start one and stream it (SSE), read one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from app.api.bodies import form_files, form_texts, media_type, parse_json, read_form
from app.api.deps import CurrentPrincipal, CurrentScope, DbSession, HeaderUserId, get_settings
from app.api.openapi import schema_ref
from app.api.routing import ServiceRoute
from app.api.workspace import MAX_UPLOAD_FILES, save_uploads
from app.errors import UnprocessableError, error_responses
from app.models.run import ACTIVE_RUN_STATUSES
from app.schemas.runs import RunRead, StreamRequest, StreamUpload, run_read
from app.services import runs as service
from app.services.budgets import reserve
from app.services.cluster import Cluster, Watch
from app.services.execute.events import RunEventLog, done_data
from app.services.execute.executor import RunExecutor
from app.services.execute.limits import check_queue_room
from app.services.execute.queue import defer, queue_for, seal
from app.services.execute.spec import RunInputs
from app.services.mcp.servers import plan_servers, run_servers
from app.services.metrics import FOLLOWERS
from app.services.scope import TenantScope
from app.services.tenants import tenant_settings

router = APIRouter(route_class=ServiceRoute, prefix="/api/tenants/{tenant_id}", tags=["execution"])

PING_SECONDS = 10.0
COALESCE_SECONDS = 0.02
# A follower of another node's run: how often it reads without a notice, and repeats to
# the owner that it follows.
POLL_SECONDS = 1.0
# A run that ended with no `done` stored after this long gets one made up for it.
DONE_GRACE_SECONDS = 5.0
_DONE_STATUS = {"succeeded": "success", "cancelled": "cancelled"}
# How long a cancel waits for another node to stop its run before it answers 202.
CANCEL_WAIT_SECONDS = 10.0
FOLLOW_REPEAT_SECONDS = 5.0
MAX_SEQ = 10_000_000  # the highest seq a client may resume after
_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: init, progress, text_delta, assistant, tool_call, "
        "tool_result, subagent_start, subagent_end, title, context_status, ping, error, "
        "and always a last `done` (see docs/events.md).",
        "content": {
            "text/event-stream": {
                "schema": {"type": "object", "description": "Each event's data: a JSON object"}
            }
        },
        "headers": {
            "X-Run-ID": {
                "description": "The run's id",
                "schema": {"type": "string", "format": "uuid"},
            }
        },
    }
}


def _sse(event: str, payload: bytes, event_id: int | None = None) -> bytes:
    head = f"event: {event}\n" if event_id is None else f"event: {event}\nid: {event_id}\n"
    return b"%sdata: %s\n\n" % (head.encode(), payload)


async def sse_events(events: RunEventLog, after: int = 0) -> AsyncIterator[bytes]:
    """A run's events as SSE, from seq `after` on, with a `ping` after each 10 s of silence.
    Pings carry the last seq but no `id:`, so they never move a client's Last-Event-ID.
    Events that arrived together go out in one write: a fast answer is not one socket
    write per token."""
    position = after
    quiet_since = time.monotonic()
    while (batch := await events.after(position, wait_seconds=PING_SECONDS)) is not None:
        if not batch:
            ping = {
                "seq": position,
                "timestamp": datetime.now(UTC).isoformat(),
                "run_id": str(events.run_id),
                "elapsed_ms": int((time.monotonic() - quiet_since) * 1000),
            }
            yield _sse("ping", orjson.dumps(ping))
            continue
        yield b"".join(_sse(e["event"], e["json"], e["seq"]) for e in batch)
        position += len(batch)
        quiet_since = time.monotonic()
        # While events flow, gather a few milliseconds' worth per write.
        await asyncio.sleep(COALESCE_SECONDS)
    # A client that re-attached at or past the end still gets `done`, as from a replay.
    if after >= len(events.events) and events.events and events.events[-1]["event"] == "done":
        last = events.events[-1]
        yield _sse(last["event"], last["json"], last["seq"])


async def follow_stored(
    request: Request, tenant_id: str, run_id: uuid.UUID, after: int
) -> AsyncIterator[bytes]:
    """A run this node does not hold (another node runs it, or it is queued): its stored
    events after seq `after`, then each batch its owner stores, read when the owner's
    notice comes (or after a second without one), until `done`. Should the run come to
    this node meanwhile, its live log takes over from where the stored ones left off."""
    state = request.app.state
    executor: RunExecutor = state.executor
    cluster: Cluster = state.cluster
    with cluster.signals.watching(str(run_id)) as news:
        async for chunk in _follow_stored(
            state, executor, cluster, TenantScope(tenant_id), run_id, news, after
        ):
            yield chunk


async def _follow_stored(
    state: Any,
    executor: RunExecutor,
    cluster: Cluster,
    scope: TenantScope,
    run_id: uuid.UUID,
    news: Watch,
    position: int,
) -> AsyncIterator[bytes]:
    key = str(run_id)
    quiet_since, told = time.monotonic(), -FOLLOW_REPEAT_SECONDS
    ended_at: float | None = None
    while True:
        seen = news.version  # news from here on wakes the wait below
        live = executor.live_events(run_id)
        if live is not None:
            async for chunk in sse_events(live, after=position):
                yield chunk
            return
        async with state.sessionmaker() as session:
            found = await service.run_state(session, scope, run_id)
            if found is None:
                return  # deleted
            status, owner = found
            if status in ACTIVE_RUN_STATUSES:
                rows = await service.stored_events(session, scope, run_id, position)
                ended_at = None
            else:  # what is left, and always its `done`
                rows = await service.replay_after(session, scope, run_id, position)
                ended_at = ended_at or time.monotonic()
        if not rows and ended_at and time.monotonic() - ended_at > DONE_GRACE_SECONDS:
            # Ended, but its `done` was never stored (its node died as it wrote it).
            done = {**done_data(_DONE_STATUS.get(status, "error")), "seq": position + 1}
            done.update(timestamp=datetime.now(UTC).isoformat(), run_id=key)
            yield _sse("done", orjson.dumps(done), position + 1)
            return
        if (
            owner not in (None, cluster.node_id)
            and time.monotonic() - told >= FOLLOW_REPEAT_SECONDS
        ):
            await cluster.tell("f", run_id)  # its owner stores its events promptly
            told = time.monotonic()
        if rows:
            yield b"".join(_sse(row.type, orjson.dumps(row.data), row.seq) for row in rows)
            position, quiet_since = max(position, rows[-1].seq), time.monotonic()
            if rows[-1].type == "done":
                return
            continue
        if time.monotonic() - quiet_since >= PING_SECONDS:
            ping = {
                "seq": position,
                "timestamp": datetime.now(UTC).isoformat(),
                "run_id": key,
                "elapsed_ms": int((time.monotonic() - quiet_since) * 1000),
            }
            yield _sse("ping", orjson.dumps(ping))
            quiet_since = time.monotonic()
        await news.wait(seen, POLL_SECONDS)


async def _counted(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """An event stream, counted among this node's followers while it is open."""
    FOLLOWERS.inc()
    try:
        async for chunk in body:
            yield chunk
    finally:
        FOLLOWERS.dec()


@dataclass(frozen=True)
class StreamBody:
    request: StreamRequest
    files: list[UploadFile]
    paths: list[str] | None


async def _stream_body(request: Request) -> AsyncIterator[StreamBody]:
    """The stream request: JSON, or multipart/form-data (`request`: the JSON, `files`,
    `paths`)."""
    if media_type(request) != "multipart/form-data":
        yield StreamBody(parse_json(StreamRequest, await request.body(), "body"), [], None)
        return
    async with read_form(
        request, max_files=MAX_UPLOAD_FILES, max_fields=MAX_UPLOAD_FILES + 1
    ) as form:
        raw = form.get("request")
        if not isinstance(raw, str):
            raise UnprocessableError("The multipart body needs a `request` field: the JSON request")
        body = parse_json(StreamRequest, raw, "body", "request")
        yield StreamBody(body, form_files(form, "files"), form_texts(form, "paths") or None)


@router.post(
    "/conversations/{conversation_id}/stream",
    response_class=StreamingResponse,
    responses={**_STREAM_DOC, **error_responses(401, 403, 404, 409, 413, 422, 429, 503)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema_ref(StreamRequest)},
                "multipart/form-data": {
                    "schema": schema_ref(StreamUpload),
                    "encoding": {"request": {"contentType": "application/json"}},
                },
            },
        }
    },
)
async def stream(
    request: Request,
    scope: CurrentScope,
    principal: CurrentPrincipal,
    session: DbSession,
    user_id: HeaderUserId,
    conversation_id: Annotated[uuid.UUID, Path()],
    body: Annotated[StreamBody, Depends(_stream_body, scope="function")],
) -> StreamingResponse:
    """Run the agent on the user's input and stream what it does. The run belongs to the
    service, not to this connection: a client that goes away does not stop it. Sent as
    multipart, the request's files are put into the workspace before the run starts."""
    executor: RunExecutor = request.app.state.executor
    settings = get_settings(request)
    executor.check_accepting()
    run = await service.queue_run(
        session,
        scope,
        conversation_id,
        body.request,
        user_id,
        max_input_chars=settings.max_user_input_chars,
        api_key_id=principal.key_id,
    )
    # Its files, in the same transaction: refused (422, 413), neither they nor the run stay.
    if body.files:
        await save_uploads(
            request, session, scope, conversation_id, body.files, body.paths, user_id
        )
    # The MCP servers it connects to, their placeholders filled from the tenant's secrets
    # and this request's tokens (422 naming any that has no value): held in memory only.
    servers = await run_servers(session, scope, body.request.mcp_servers)
    plans = await plan_servers(
        session,
        request.app.state.vault,
        scope,
        servers,
        tokens=body.request.tokens,
        user_id=run.user_id,
        conversation_id=conversation_id,
    )
    # The most it may cost: its own cap, or what its budgets have left.
    # Last, as the tenant's budgets are locked from here to the commit: 429 if one is
    # spent; else what the run holds of them, and the most it may cost.
    run.reserved_usd, cost_cap = await reserve(
        session, scope.tenant_id, run.user_id, body.request.max_cost_usd
    )
    inputs = RunInputs(tuple(plans), cost_cap=cost_cap)
    # 429 if the queue is full (counted on every node, under a lock held to the commit);
    # else its job is queued with it: for the node holding the conversation's warm
    # session if it has room, else for any worker.
    tenant_limit = (await tenant_settings(session, scope.tenant_id)).max_concurrent_runs
    await check_queue_room(
        session,
        run.run_id,
        scope.tenant_id,
        tenant_limit,
        settings.max_concurrent_runs,
        settings.max_queued_runs,
    )
    queue = await queue_for(session, conversation_id, run.run_id, settings.node_timeout_seconds)
    await defer(session, run, queue, seal(request.app.state.vault, inputs))
    # The stream must not hold a database connection: this endpoint ends its transaction
    # here, not in the dependency. The job is claimed when this commits.
    await session.commit()
    return StreamingResponse(
        _counted(follow_stored(request, scope.tenant_id, run.run_id, 0)),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Run-ID": str(run.run_id),
        },
    )


@router.get("/runs/{run_id}", response_model=RunRead, responses=error_responses(401, 403, 404, 422))
async def get_run(
    scope: CurrentScope, session: DbSession, run_id: Annotated[uuid.UUID, Path()]
) -> RunRead:
    return run_read(await service.get_run(session, scope, run_id))


# An event seq, 0 to MAX_SEQ, in ASCII digits (or empty: none).
LAST_EVENT_ID = f"^(?:[0-9]{{1,{len(str(MAX_SEQ)) - 1}}}|{MAX_SEQ})?$"


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    """Where a re-attaching client reads on from: the header wins over `?after=`."""
    return int(last_event_id) if last_event_id else (after or 0)


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses={**_STREAM_DOC, **error_responses(401, 403, 404, 422)},
)
async def run_events(
    request: Request,
    scope: CurrentScope,
    session: DbSession,
    run_id: Annotated[uuid.UUID, Path()],
    after: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="Replay events after this seq")
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=LAST_EVENT_ID,
            description=f"Replay events after this seq (0 to {MAX_SEQ}); wins over `after`",
        ),
    ] = None,
) -> StreamingResponse:
    """Re-attach to a run: every event after `Last-Event-ID` (or `?after=`), replayed, then
    the live run until `done`. On a finished run it replays and ends."""
    start = _resume_point(last_event_id, after)
    await service.get_run(session, scope, run_id)
    executor: RunExecutor = request.app.state.executor
    live = executor.live_events(run_id)
    body = (
        sse_events(live, after=start)
        if live is not None
        else follow_stored(request, scope.tenant_id, run_id, start)
    )
    await session.commit()  # nothing is held while the stream is open
    return StreamingResponse(
        _counted(body),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Run-ID": str(run_id)},
    )


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunRead,
    responses={
        202: {"description": "The run is still being stopped", "model": RunRead},
        **error_responses(401, 403, 404, 409, 422),
    },
)
async def cancel_run(
    request: Request,
    response: Response,
    scope: CurrentScope,
    session: DbSession,
    run_id: Annotated[uuid.UUID, Path()],
) -> RunRead:
    """Stop a run: the agent process ends, the stream ends with `done` (status
    `cancelled`), and the messages and usage so far are kept. 409 if it ended first;
    202 if it is still being stopped when this answers."""
    run = await service.get_run(session, scope, run_id)
    service.check_cancellable(run)
    executor: RunExecutor = request.app.state.executor
    cluster: Cluster = request.app.state.cluster
    await session.commit()
    if not await executor.cancel(run_id):
        run = await service.get_run(session, scope, run_id)
        owner = run.node_id
        remote = owner not in (None, cluster.node_id) and await cluster.alive(owner)
        await session.commit()
        if remote:
            # Its owner stops it: told, then watched until it has ended (or time is up).
            with cluster.signals.watching(str(run_id)) as news:
                await cluster.tell("c", run_id)
                deadline = time.monotonic() + CANCEL_WAIT_SECONDS
                while time.monotonic() < deadline:
                    seen = news.version
                    async with request.app.state.sessionmaker() as watch:
                        found = await service.run_state(watch, scope, run_id)
                    if found is None or found[0] not in ACTIVE_RUN_STATUSES:
                        break
                    await news.wait(seen, POLL_SECONDS)
        else:  # queued, not yet taken by a node (its job goes), or no live node holds it
            run = await service.get_run(session, scope, run_id, for_update=True)
            service.check_cancellable(run)
            await service.cancel_orphan(session, run)
            await session.commit()
    session.expire(run)
    run = await service.get_run(session, scope, run_id)  # 404 if deleted meanwhile
    if run.status != "cancelled":
        service.check_cancellable(run)  # it ended on its own before the cancel took
        response.status_code = 202
    return run_read(run)
