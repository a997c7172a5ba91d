"""Routes of tenants (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from app.api.deps import AdminPrincipal, DbSession, Pagination, get_settings, get_store
from app.api.routing import ServiceRoute
from app.errors import error_responses
from app.schemas.common import Page
from app.schemas.tenants import TenantCreate, TenantId, TenantRead, TenantStatus, TenantUpdate
from app.services import tenants as service
from app.services import workspace
from app.services.execute.executor import TENANT_DELETED, RunExecutor
from app.services.execute.skillset import tenant_skillsets
from app.services.execute.spec import tenant_workspaces
from app.services.execute.sync import tenant_manifests

router = APIRouter(route_class=ServiceRoute, prefix="/api/tenants", tags=["tenants"])

TenantPath = Annotated[TenantId, Path(description="The tenant's slug")]


@router.get("", response_model=Page[TenantRead], responses=error_responses(401, 403, 422))
async def list_tenants(
    _: AdminPrincipal,
    session: DbSession,
    page: Pagination,
    status: Annotated[TenantStatus | None, Query()] = None,
) -> Page[TenantRead]:
    rows, total = await service.list_tenants(
        session, status=status, limit=page.limit, offset=page.offset
    )
    return Page(items=[TenantRead.model_validate(r) for r in rows], total=total)


@router.post(
    "",
    response_model=TenantRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 409, 422),
)
async def create_tenant(
    _: AdminPrincipal, session: DbSession, body: TenantCreate, request: Request
) -> TenantRead:
    default_model = get_settings(request).default_model_id
    return TenantRead.model_validate(await service.create_tenant(session, body, default_model))


@router.get(
    "/{tenant_id}", response_model=TenantRead, responses=error_responses(401, 403, 404, 422)
)
async def get_tenant(_: AdminPrincipal, session: DbSession, tenant_id: TenantPath) -> TenantRead:
    return TenantRead.model_validate(await service.get_tenant(session, tenant_id))


@router.put(
    "/{tenant_id}", response_model=TenantRead, responses=error_responses(401, 403, 404, 422)
)
async def update_tenant(
    _: AdminPrincipal, session: DbSession, tenant_id: TenantPath, body: TenantUpdate
) -> TenantRead:
    return TenantRead.model_validate(await service.update_tenant(session, tenant_id, body))


@router.delete(
    "/{tenant_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(401, 403, 404, 422),
)
async def delete_tenant(
    request: Request, _: AdminPrincipal, session: DbSession, tenant_id: TenantPath
) -> None:
    """Delete the tenant with everything it owns; its runs in progress are cancelled."""
    executor: RunExecutor = request.app.state.executor
    await executor.cancel_runs_of(tenant_id, None, TENANT_DELETED)
    await service.delete_tenant(session, tenant_id)
    await session.commit()
    await executor.end_work_of(tenant_id, None, TENANT_DELETED)
    await executor.cluster.tell("x", tenant_id)  # and other nodes'
    data_dir = request.app.state.settings.data_dir
    request.app.state.background.spawn(
        workspace.remove_stored(
            get_store(request),
            prefix=f"{tenant_id}/",
            local=[
                tenant_workspaces(data_dir, tenant_id),
                tenant_manifests(data_dir, tenant_id),
                tenant_skillsets(data_dir, tenant_id),
            ],
        ),
        name=f"delete-files-{tenant_id}",
    )
