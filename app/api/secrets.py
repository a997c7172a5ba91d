"""Routes of a tenant's secrets: set (write-only), list names, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from app.api.deps import CurrentScope, DbSession, Pagination
from app.api.routing import ServiceRoute
from app.errors import error_responses
from app.schemas.common import PLACEHOLDER_NAME, Page
from app.schemas.integrations import SecretRead, SecretWrite
from app.services import secrets as service

router = APIRouter(
    route_class=ServiceRoute, prefix="/api/tenants/{tenant_id}/secrets", tags=["secrets"]
)

NamePath = Annotated[str, Path(pattern=PLACEHOLDER_NAME, description="The secret's name")]


@router.put(
    "/{secret_name}",
    response_model=SecretRead,
    responses={
        201: {"model": SecretRead, "description": "Created"},
        **error_responses(401, 403, 404, 422),
    },
)
async def put_secret(
    request: Request,
    response: Response,
    scope: CurrentScope,
    session: DbSession,
    secret_name: NamePath,
    body: SecretWrite,
) -> SecretRead:
    """Set a secret (201 when new, 200 when replaced). Its value is encrypted at rest and
    never shown again: MCP server configs use it as `${secrets.NAME}`."""
    row, created = await service.put_secret(
        session, request.app.state.vault, scope, secret_name, body.value
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return SecretRead.model_validate(row)


@router.get("", response_model=Page[SecretRead], responses=error_responses(401, 403, 404, 422))
async def list_secrets(
    scope: CurrentScope, session: DbSession, page: Pagination
) -> Page[SecretRead]:
    """The tenant's secrets: names and times, never values."""
    rows, total = await service.list_secrets(session, scope, limit=page.limit, offset=page.offset)
    return Page(items=[SecretRead.model_validate(r) for r in rows], total=total)


@router.delete(
    "/{secret_name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_secret(scope: CurrentScope, session: DbSession, secret_name: NamePath) -> Response:
    await service.delete_secret(session, scope, secret_name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
