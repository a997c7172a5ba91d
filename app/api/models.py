"""Routes of the models catalog."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.api.deps import AdminPrincipal, CurrentPrincipal, DbSession, Pagination
from app.api.routing import ServiceRoute
from app.errors import error_responses
from app.schemas.common import Page
from app.schemas.models import (
    ModelCreate,
    ModelId,
    ModelRead,
    ModelStatus,
    ModelStatusUpdate,
    ModelUpdate,
)
from app.services import models as service

router = APIRouter(route_class=ServiceRoute, prefix="/api/models", tags=["models"])

ModelPath = Annotated[ModelId, Path(description="The catalog id, e.g. claude-sonnet-4-5")]


@router.get("", response_model=Page[ModelRead], responses=error_responses(401, 403, 422))
async def list_models(
    _: CurrentPrincipal,
    session: DbSession,
    page: Pagination,
    status: Annotated[ModelStatus | None, Query()] = None,
) -> Page[ModelRead]:
    rows, total = await service.list_models(
        session, status=status, limit=page.limit, offset=page.offset
    )
    return Page(items=[ModelRead.model_validate(r) for r in rows], total=total)


@router.get("/{model_id}", response_model=ModelRead, responses=error_responses(401, 403, 404, 422))
async def get_model(_: CurrentPrincipal, session: DbSession, model_id: ModelPath) -> ModelRead:
    return ModelRead.model_validate(await service.get_model(session, model_id))


@router.post(
    "",
    response_model=ModelRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 409, 422),
)
async def create_model(_: AdminPrincipal, session: DbSession, body: ModelCreate) -> ModelRead:
    return ModelRead.model_validate(await service.create_model(session, body))


@router.put("/{model_id}", response_model=ModelRead, responses=error_responses(401, 403, 404, 422))
async def update_model(
    _: AdminPrincipal, session: DbSession, model_id: ModelPath, body: ModelUpdate
) -> ModelRead:
    return ModelRead.model_validate(await service.update_model(session, model_id, body))


@router.patch(
    "/{model_id}/status", response_model=ModelRead, responses=error_responses(401, 403, 404, 422)
)
async def set_model_status(
    _: AdminPrincipal, session: DbSession, model_id: ModelPath, body: ModelStatusUpdate
) -> ModelRead:
    update = ModelUpdate(status=body.status)
    return ModelRead.model_validate(await service.update_model(session, model_id, update))


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 409, 422),
)
async def delete_model(_: AdminPrincipal, session: DbSession, model_id: ModelPath) -> None:
    await service.delete_model(session, model_id)
