"""Who is calling: an admin key from settings or a tenant key from the database."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ForbiddenError, NotFoundError, TenantInactiveError, UnauthorizedError
from app.services.api_keys import find_active_key, last_used_is_stale
from app.services.scope import TenantScope


@dataclass(frozen=True, slots=True)
class Principal:
    tenant_id: str | None  # None for an admin
    key_id: uuid.UUID | None
    # The key's last-used time is older than its resolution and wants writing.
    stamp_last_used: bool = False

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError("This operation needs an admin key")

    def scope_for(self, tenant_id: str) -> TenantScope:
        """The scope for a route under /api/tenants/{tenant_id}. Another tenant's id
        answers 404, exactly as if it did not exist."""
        if not self.is_admin and tenant_id != self.tenant_id:
            raise NotFoundError("Tenant", tenant_id)
        return TenantScope(tenant_id)


ADMIN = Principal(tenant_id=None, key_id=None)


def _is_admin_key(presented: str, admin_keys: tuple[str, ...]) -> bool:
    # Digests of equal length, every key compared: timing tells neither a key's length
    # nor which key matched.
    digest = hashlib.sha256(presented.encode()).digest()
    found = False
    for admin_key in admin_keys:
        found |= hmac.compare_digest(digest, hashlib.sha256(admin_key.encode()).digest())
    return found


async def authenticate(
    session: AsyncSession, presented: str | None, admin_keys: tuple[str, ...]
) -> Principal:
    if not presented:
        raise UnauthorizedError()
    if _is_admin_key(presented, admin_keys):
        return ADMIN
    found = await find_active_key(session, presented)
    if found is None:
        raise UnauthorizedError("The API key is not valid")
    key, tenant = found
    if tenant.status != "active":
        raise TenantInactiveError()
    return Principal(
        tenant_id=tenant.tenant_id, key_id=key.id, stamp_last_used=last_used_is_stale(key)
    )
