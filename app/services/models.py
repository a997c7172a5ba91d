"""The models catalog: read by everyone, changed by admins."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ConflictError, NotFoundError, UnprocessableError
from app.models import CatalogModel, Conversation, Tenant
from app.schemas.models import ModelCreate, ModelUpdate
from app.services.pagination import paginate


async def list_models(
    session: AsyncSession, *, status: str | None, limit: int, offset: int
) -> tuple[list[CatalogModel], int]:
    query = select(CatalogModel)
    if status is not None:
        query = query.where(CatalogModel.status == status)
    return await paginate(session, query, CatalogModel.model_id, limit=limit, offset=offset)


async def get_model(
    session: AsyncSession, model_id: str, *, for_update: bool = False
) -> CatalogModel:
    model = await session.get(CatalogModel, model_id, with_for_update=for_update)
    if model is None:
        raise NotFoundError("Model", model_id)
    return model


async def require_active_model(session: AsyncSession, model_id: str) -> CatalogModel:
    """The model a tenant or conversation is about to use; 422 unless it exists and is active."""
    model = await session.get(CatalogModel, model_id)
    if model is None:
        raise UnprocessableError(f"Model '{model_id}' is not in the catalog", code="UNKNOWN_MODEL")
    if model.status != "active":
        raise UnprocessableError(f"Model '{model_id}' is deprecated", code="MODEL_DEPRECATED")
    return model


async def create_model(session: AsyncSession, data: ModelCreate) -> CatalogModel:
    if await session.get(CatalogModel, data.model_id) is not None:
        raise ConflictError(f"Model '{data.model_id}' already exists", code="MODEL_EXISTS")
    model = CatalogModel(**data.model_dump())
    session.add(model)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise ConflictError(f"Model '{data.model_id}' already exists", code="MODEL_EXISTS") from exc
    return model


async def update_model(session: AsyncSession, model_id: str, data: ModelUpdate) -> CatalogModel:
    model = await get_model(session, model_id, for_update=True)
    for name, value in data.changes().items():
        setattr(model, name, value)
    await session.flush()
    return model


async def delete_model(session: AsyncSession, model_id: str) -> None:
    model = await get_model(session, model_id, for_update=True)
    in_use = await session.scalar(
        select(
            exists().where(Tenant.default_model_id == model_id)
            | exists().where(Conversation.model_id == model_id)
        )
    )
    if in_use:
        raise ConflictError(
            f"Model '{model_id}' is used by a tenant or a conversation; deprecate it instead",
            code="MODEL_IN_USE",
        )
    await session.delete(model)
    try:
        await session.flush()
    except IntegrityError as exc:  # a row that started using it meanwhile
        raise ConflictError(f"Model '{model_id}' is in use", code="MODEL_IN_USE") from exc
