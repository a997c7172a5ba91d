"""Routes of conversations and their message log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from app.api.deps import CurrentScope, DbSession, HeaderUserId, Pagination, get_store
from app.api.routing import ServiceRoute
from app.errors import error_responses
from app.schemas.common import Page, UserId, UtcDatetime
from app.schemas.conversations import (
    ConversationCreate,
    ConversationRead,
    ConversationStatus,
    ConversationUpdate,
    MessageRead,
)
from app.services import conversations as service
from app.services import workspace
from app.services.execute.executor import CONVERSATION_DELETED, RunExecutor
from app.services.execute.sync import cached_copy

router = APIRouter(
    route_class=ServiceRoute,
    prefix="/api/tenants/{tenant_id}/conversations",
    tags=["conversations"],
)

ConversationPath = Annotated[uuid.UUID, Path(description="The conversation's UUID")]
_ONE = error_responses(401, 403, 404, 422)


@router.post(
    "",
    response_model=ConversationRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 404, 422),
)
async def create_conversation(
    scope: CurrentScope, session: DbSession, user_id: HeaderUserId, body: ConversationCreate
) -> ConversationRead:
    conversation = await service.create_conversation(session, scope, body, user_id)
    return ConversationRead.model_validate(conversation)


@router.get("", response_model=Page[ConversationRead], responses=_ONE)
async def list_conversations(
    scope: CurrentScope,
    session: DbSession,
    page: Pagination,
    user_id: Annotated[UserId | None, Query()] = None,
    status: Annotated[ConversationStatus | None, Query()] = None,
    created_after: Annotated[
        UtcDatetime | None, Query(description="Only conversations created at or after this time")
    ] = None,
    created_before: Annotated[
        UtcDatetime | None, Query(description="Only conversations created before this time")
    ] = None,
) -> Page[ConversationRead]:
    rows, total = await service.list_conversations(
        session,
        scope,
        user_id=user_id,
        status=status,
        created_after=created_after,
        created_before=created_before,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(items=[ConversationRead.model_validate(r) for r in rows], total=total)


@router.get("/{conversation_id}", response_model=ConversationRead, responses=_ONE)
async def get_conversation(
    scope: CurrentScope, session: DbSession, conversation_id: ConversationPath
) -> ConversationRead:
    conversation = await service.get_conversation(session, scope, conversation_id)
    return ConversationRead.model_validate(conversation)


@router.patch("/{conversation_id}", response_model=ConversationRead, responses=_ONE)
async def update_conversation(
    scope: CurrentScope,
    session: DbSession,
    conversation_id: ConversationPath,
    body: ConversationUpdate,
) -> ConversationRead:
    conversation = await service.update_conversation(session, scope, conversation_id, body)
    return ConversationRead.model_validate(conversation)


@router.post("/{conversation_id}/archive", response_model=ConversationRead, responses=_ONE)
async def archive_conversation(
    request: Request, scope: CurrentScope, session: DbSession, conversation_id: ConversationPath
) -> ConversationRead:
    """Archive: the conversation takes no more turns. A run in progress finishes."""
    conversation = await service.archive_conversation(session, scope, conversation_id)
    await session.commit()
    executor: RunExecutor = request.app.state.executor
    executor.ctx.warm.discard(scope.tenant_id, str(conversation_id))
    return ConversationRead.model_validate(conversation)


@router.delete(
    "/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_ONE,
)
async def delete_conversation(
    request: Request, scope: CurrentScope, session: DbSession, conversation_id: ConversationPath
) -> None:
    """Delete the conversation with its messages and runs; a run in progress is cancelled."""
    executor: RunExecutor = request.app.state.executor
    # Its runs end (and are recorded) first; then what started while the delete waited.
    await executor.cancel_runs_of(scope.tenant_id, conversation_id, CONVERSATION_DELETED)
    await service.delete_conversation(session, scope, conversation_id)
    await session.commit()
    await executor.end_work_of(scope.tenant_id, conversation_id, CONVERSATION_DELETED)
    await executor.cluster.tell("x", scope.tenant_id, conversation_id)  # and other nodes'
    data_dir, cid = request.app.state.settings.data_dir, str(conversation_id)
    request.app.state.background.spawn(
        workspace.remove_stored(
            get_store(request),
            prefix=workspace.conversation_prefix(scope.tenant_id, conversation_id),
            local=cached_copy(data_dir, scope.tenant_id, cid),
        ),
        name=f"delete-files-{cid}",
    )


@router.get("/{conversation_id}/messages", response_model=Page[MessageRead], responses=_ONE)
async def list_messages(
    scope: CurrentScope, session: DbSession, conversation_id: ConversationPath, page: Pagination
) -> Page[MessageRead]:
    rows, total = await service.list_messages(
        session, scope, conversation_id, limit=page.limit, offset=page.offset
    )
    return Page(items=[MessageRead.model_validate(r) for r in rows], total=total)
