"""The models catalog: read by everyone, changed by admins."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ConflictError, NotFoundError, UnprocessableError
from app.models import CatalogModel, Conversation, Tenant
from app.schemas.models import ModelCreate, ModelUpdate
from app.services.integrity import flush_mapping_violations
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


def unknown_model(model_id: str) -> UnprocessableError:
    return UnprocessableError(f"Model '{model_id}' is not in the catalog", code="UNKNOWN_MODEL")


def _exists(model_id: str) -> ConflictError:
    return ConflictError(f"Model '{model_id}' already exists", code="MODEL_EXISTS")


async def require_model(
    session: AsyncSession, model_id: str, *, allow_deprecated: bool = False
) -> CatalogModel:
    """The model a tenant or conversation is about to use: 422 unless it is in the
    catalog and (unless allowed otherwise) active."""
    model = await session.get(CatalogModel, model_id)
    if model is None:
        raise unknown_model(model_id)
    if model.status != "active" and not allow_deprecated:
        raise UnprocessableError(f"Model '{model_id}' is deprecated", code="MODEL_DEPRECATED")
    return model


async def create_model(session: AsyncSession, data: ModelCreate) -> CatalogModel:
    if await session.get(CatalogModel, data.model_id) is not None:
        raise _exists(data.model_id)
    model = CatalogModel(**data.model_dump())
    session.add(model)
    await flush_mapping_violations(session, {"pk_models": lambda: _exists(data.model_id)})
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
    in_use = ConflictError(f"Model '{model_id}' is in use", code="MODEL_IN_USE")
    # A tenant or conversation that started using it meanwhile.
    await flush_mapping_violations(
        session,
        {
            "fk_tenants_default_model_id_models": lambda: in_use,
            "fk_conversations_model_id_models": lambda: in_use,
        },
    )
