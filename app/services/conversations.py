"""Conversations of a tenant's users, and their message log."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import AppError, NotFoundError, UnprocessableError
from app.models import Conversation, ConversationCount, Message, Tenant
from app.schemas.conversations import ConversationCreate, ConversationUpdate
from app.services.integrity import flush_mapping_violations
from app.services.models import require_model, unknown_model
from app.services.pagination import paginate
from app.services.scope import TenantScope


async def create_conversation(
    session: AsyncSession, scope: TenantScope, data: ConversationCreate, header_user_id: str | None
) -> Conversation:
    if data.user_id and header_user_id and data.user_id != header_user_id:
        raise UnprocessableError(
            "user_id in the body differs from the X-User-ID header", code="USER_ID_MISMATCH"
        )
    if data.model_id is not None:
        model_id = (await require_model(session, data.model_id)).model_id
    else:
        # The tenant's default keeps working after it is deprecated: deprecation stops
        # new choices of a model, not what already uses it.
        default = await session.scalar(
            select(Tenant.default_model_id).where(Tenant.tenant_id == scope.tenant_id)
        )
        if default is None:  # the tenant was deleted after this request was authorised
            raise NotFoundError("Tenant", scope.tenant_id)
        model_id = (await require_model(session, default, allow_deprecated=True)).model_id
    conversation = Conversation(
        tenant_id=scope.tenant_id,
        user_id=data.user_id or header_user_id,
        title=data.title or None,
        model_id=model_id,
        metadata_=data.metadata,
    )
    session.add(conversation)
    await flush_mapping_violations(session, _reference_errors(scope, model_id))
    return conversation


def _reference_errors(scope: TenantScope, model_id: str) -> dict[str, Callable[[], AppError]]:
    """What a conversation's foreign keys mean when a concurrent delete breaks them."""
    return {
        "fk_conversations_tenant_id_tenants": lambda: NotFoundError("Tenant", scope.tenant_id),
        "fk_conversations_model_id_models": lambda: unknown_model(model_id),
    }


async def list_conversations(
    session: AsyncSession,
    scope: TenantScope,
    *,
    user_id: str | None,
    status: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[Conversation], int]:
    query = scope.select(Conversation)
    if user_id is not None:
        query = query.where(Conversation.user_id == user_id)
    if status is not None:
        query = query.where(Conversation.status == status)
    if created_after is not None:
        query = query.where(Conversation.created_at >= created_after)
    if created_before is not None:
        query = query.where(Conversation.created_at < created_before)
    total = None
    if user_id is None and created_after is None and created_before is None:
        total = await _tenant_total(session, scope, status)
    return await paginate(
        session,
        query,
        Conversation.updated_at.desc(),
        Conversation.conversation_id.desc(),
        limit=limit,
        offset=offset,
        total=total,
    )


async def _tenant_total(session: AsyncSession, scope: TenantScope, status: str | None) -> int:
    """The tenant's conversation count from the trigger-kept counters: constant time,
    where COUNT(*) grows with the tenant (see bench/list_conversations.py)."""
    query = scope.select(ConversationCount)
    if status is not None:
        query = query.where(ConversationCount.status == status)
    counts = await session.scalars(query)
    return sum(row.count for row in counts)


async def get_conversation(
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> Conversation:
    return await scope.get(
        session,
        Conversation,
        Conversation.conversation_id,
        conversation_id,
        resource="Conversation",
        for_update=for_update,
    )


async def update_conversation(
    session: AsyncSession, scope: TenantScope, conversation_id: uuid.UUID, data: ConversationUpdate
) -> Conversation:
    conversation = await get_conversation(session, scope, conversation_id, for_update=True)
    changes = data.changes()
    if "model_id" in changes and changes["model_id"] != conversation.model_id:
        await require_model(session, changes["model_id"])
    if "metadata" in changes:
        changes["metadata_"] = changes.pop("metadata")
    if "title" in changes:
        changes["title"] = changes["title"] or None
    for name, value in changes.items():
        setattr(conversation, name, value)
    await flush_mapping_violations(session, _reference_errors(scope, conversation.model_id))
    return conversation


async def archive_conversation(
    session: AsyncSession, scope: TenantScope, conversation_id: uuid.UUID
) -> Conversation:
    conversation = await get_conversation(session, scope, conversation_id, for_update=True)
    if conversation.status != "archived":
        conversation.status = "archived"
        conversation.archived_at = datetime.now(UTC)
        await session.flush()
    return conversation


async def delete_conversation(
    session: AsyncSession, scope: TenantScope, conversation_id: uuid.UUID
) -> None:
    """Remove the conversation; its messages go with it (ON DELETE CASCADE)."""
    conversation = await get_conversation(session, scope, conversation_id, for_update=True)
    await session.delete(conversation)
    await session.flush()


async def next_message_seq(session: AsyncSession, conversation_id: uuid.UUID) -> int:
    """The seq the conversation's next message takes (one run at a time writes them)."""
    last = await session.scalar(
        select(func.coalesce(func.max(Message.seq), 0)).where(
            Message.conversation_id == conversation_id
        )
    )
    return int(last or 0) + 1


async def list_messages(
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    *,
    limit: int,
    offset: int,
) -> tuple[list[Message], int]:
    await get_conversation(session, scope, conversation_id)
    query = scope.select(Message).where(Message.conversation_id == conversation_id)
    return await paginate(session, query, Message.seq, limit=limit, offset=offset)
