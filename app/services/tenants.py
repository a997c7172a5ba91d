"""Tenants: created, changed and removed by admins."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ConflictError, NotFoundError
from app.models import Tenant
from app.schemas.tenants import TenantCreate, TenantSettings, TenantUpdate
from app.services.integrity import flush_mapping_violations
from app.services.models import require_model, unknown_model
from app.services.pagination import paginate


async def list_tenants(
    session: AsyncSession, *, status: str | None, limit: int, offset: int
) -> tuple[list[Tenant], int]:
    query = select(Tenant)
    if status is not None:
        query = query.where(Tenant.status == status)
    return await paginate(session, query, Tenant.tenant_id, limit=limit, offset=offset)


async def get_tenant(session: AsyncSession, tenant_id: str, *, for_update: bool = False) -> Tenant:
    tenant = await session.get(Tenant, tenant_id, with_for_update=for_update)
    if tenant is None:
        raise NotFoundError("Tenant", tenant_id)
    return tenant


async def tenant_settings(session: AsyncSession, tenant_id: str) -> TenantSettings:
    """The tenant's settings, defaults filled in; 404 if there is no such tenant."""
    return TenantSettings.model_validate((await get_tenant(session, tenant_id)).settings)


async def create_tenant(session: AsyncSession, data: TenantCreate, default_model_id: str) -> Tenant:
    if await session.get(Tenant, data.tenant_id) is not None:
        raise _exists(data.tenant_id)
    model = await require_model(session, data.default_model_id or default_model_id)
    tenant = Tenant(
        tenant_id=data.tenant_id,
        name=data.name,
        system_prompt=data.system_prompt,
        default_model_id=model.model_id,
        status=data.status,
        settings=data.settings.model_dump(mode="json"),
    )
    session.add(tenant)
    await flush_mapping_violations(
        session,
        {
            "pk_tenants": lambda: _exists(data.tenant_id),
            "fk_tenants_default_model_id_models": lambda: unknown_model(model.model_id),
        },
    )
    return tenant


async def update_tenant(session: AsyncSession, tenant_id: str, data: TenantUpdate) -> Tenant:
    tenant = await get_tenant(session, tenant_id, for_update=True)
    changes = data.changes()
    if "default_model_id" in changes and changes["default_model_id"] != tenant.default_model_id:
        await require_model(session, changes["default_model_id"])
    if data.settings is not None:
        merged = TenantSettings.model_validate({**tenant.settings, **data.settings.changes()})
        changes["settings"] = merged.model_dump(mode="json")
    for name, value in changes.items():
        setattr(tenant, name, value)
    await flush_mapping_violations(
        session,
        {"fk_tenants_default_model_id_models": lambda: unknown_model(tenant.default_model_id)},
    )
    return tenant


def _exists(tenant_id: str) -> ConflictError:
    return ConflictError(f"Tenant '{tenant_id}' already exists", code="TENANT_EXISTS")


async def delete_tenant(session: AsyncSession, tenant_id: str) -> None:
    """Remove the tenant; its keys, conversations and messages go with it (ON DELETE CASCADE)."""
    tenant = await get_tenant(session, tenant_id, for_update=True)
    await session.delete(tenant)
    await session.flush()
