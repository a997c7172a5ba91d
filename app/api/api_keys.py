"""Routes of tenant API keys (admin only)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from app.api.deps import CurrentScope, DbSession, Pagination, require_admin
from app.api.routing import ServiceRoute
from app.errors import error_responses
from app.schemas.common import Page
from app.schemas.tenants import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.services import api_keys as service

router = APIRouter(
    route_class=ServiceRoute,
    prefix="/api/tenants/{tenant_id}/api-keys",
    tags=["api-keys"],
    dependencies=[Depends(require_admin)],
)


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 404, 422),
)
async def create_api_key(
    scope: CurrentScope, session: DbSession, body: ApiKeyCreate
) -> ApiKeyCreated:
    row, key = await service.create_key(session, scope, body.name)
    return ApiKeyCreated(
        id=row.id, key=key, prefix=row.prefix, name=row.name, created_at=row.created_at
    )


@router.get("", response_model=Page[ApiKeyRead], responses=error_responses(401, 403, 404, 422))
async def list_api_keys(
    scope: CurrentScope, session: DbSession, page: Pagination
) -> Page[ApiKeyRead]:
    rows, total = await service.list_keys(session, scope, limit=page.limit, offset=page.offset)
    return Page(items=[ApiKeyRead.model_validate(r) for r in rows], total=total)


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def revoke_api_key(
    scope: CurrentScope, session: DbSession, key_id: Annotated[uuid.UUID, Path()]
) -> None:
    await service.revoke_key(session, scope, key_id)
