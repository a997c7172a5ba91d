"""Request dependencies: the database session (the one transaction owner), the
caller's identity, and the tenant scope of /api/tenants/{tenant_id}/… routes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from fastapi import BackgroundTasks, Depends, Header, Path, Query, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.schemas.common import PageParams, UserId
from app.schemas.tenants import TenantId
from app.services import auth
from app.services.api_keys import touch_last_used
from app.services.scope import TenantScope
from app.services.storage import ObjectStore
from app.services.tenants import get_tenant

log = structlog.get_logger(__name__)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> ObjectStore:
    store: ObjectStore = request.app.state.store
    return store


def retire_warm_sessions(request: Request, tenant_id: str) -> None:
    """The tenant's skills or MCP servers changed: its idle agent processes, made with the
    old ones, are ended (a run would not take them anyway: their spec differs)."""
    request.app.state.executor.ctx.warm.discard(tenant_id)


def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return maker


async def _db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Commit when the endpoint returns, roll back when it raises; before the response
    is sent, so a client never sees success for work that was not saved."""
    async with get_sessionmaker(request)() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


DbSession = Annotated[AsyncSession, Depends(_db_session, scope="function")]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")
_bearer = HTTPBearer(auto_error=False, description="An API key as a bearer token")


async def _stamp_last_used(maker: async_sessionmaker[AsyncSession], key_id: uuid.UUID) -> None:
    try:
        async with maker() as session, session.begin():
            await touch_last_used(session, key_id)
    except Exception:  # a hint only: never let it fail anything
        log.warning("last_used_stamp_failed", key_id=str(key_id), exc_info=True)


def _presented_key(api_key: str | None, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    return api_key or (bearer.credentials if bearer else None)


async def check_authenticated(request: Request) -> None:
    """401 (or 403 for an inactive tenant) unless the request carries a valid key, in a
    session of its own: for a request refused before its dependencies ran."""
    presented = _presented_key(await _api_key_header(request), await _bearer(request))
    async with get_sessionmaker(request)() as session:
        await auth.authenticate(session, presented, get_settings(request).admin_key_values)


async def get_principal(
    request: Request,
    session: DbSession,
    background: BackgroundTasks,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> auth.Principal:
    presented = _presented_key(api_key, bearer)
    settings = get_settings(request)
    principal = await auth.authenticate(session, presented, settings.admin_key_values)
    if principal.stamp_last_used and principal.key_id is not None:
        # After the response, in a transaction of its own: inside the request's it would
        # lock the key row before the request's own rows (a deadlock with a tenant delete,
        # which locks them the other way round), and beside it, take a second connection.
        background.add_task(_stamp_last_used, get_sessionmaker(request), principal.key_id)
    structlog.contextvars.bind_contextvars(
        principal="admin" if principal.is_admin else f"key:{principal.key_id}"
    )
    return principal


CurrentPrincipal = Annotated[auth.Principal, Depends(get_principal)]


async def require_admin(principal: CurrentPrincipal) -> auth.Principal:
    principal.require_admin()
    return principal


AdminPrincipal = Annotated[auth.Principal, Depends(require_admin)]


async def get_tenant_scope(
    principal: CurrentPrincipal,
    session: DbSession,
    tenant_id: Annotated[TenantId, Path(description="The tenant's slug")],
) -> TenantScope:
    scope = principal.scope_for(tenant_id)
    if principal.is_admin:
        await get_tenant(session, tenant_id)  # an admin may name a tenant that does not exist
    structlog.contextvars.bind_contextvars(tenant_id=tenant_id)
    return scope


CurrentScope = Annotated[TenantScope, Depends(get_tenant_scope)]


async def get_user_id(
    x_user_id: Annotated[
        UserId | None,
        Header(description="The end user on whose behalf a tenant key acts"),
    ] = None,
) -> str | None:
    return x_user_id


HeaderUserId = Annotated[str | None, Depends(get_user_id)]
Pagination = Annotated[PageParams, Query()]
