"""Tenant API keys: issued once, stored as a hash, revoked at once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFoundError
from app.models import ApiKey, Tenant
from app.services.integrity import flush_mapping_violations
from app.services.pagination import paginate
from app.services.scope import TenantScope

KEY_PREFIX = "cmab_"
# Characters of the key kept in clear: the recognisable prefix plus 8 random ones.
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8
# last_used_at is a hint, not an audit log: write it at most this often per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so one round of SHA-256 is enough (no stretching needed).
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_key(session: AsyncSession, scope: TenantScope, name: str) -> tuple[ApiKey, str]:
    key = new_key()
    row = ApiKey(
        tenant_id=scope.tenant_id,
        name=name,
        prefix=key[:DISPLAY_PREFIX_LENGTH],
        key_hash=hash_key(key),
    )
    session.add(row)
    await flush_mapping_violations(
        session, {"fk_api_keys_tenant_id_tenants": lambda: NotFoundError("Tenant", scope.tenant_id)}
    )
    return row, key


async def list_keys(
    session: AsyncSession, scope: TenantScope, *, limit: int, offset: int
) -> tuple[list[ApiKey], int]:
    query = scope.select(ApiKey).where(ApiKey.revoked_at.is_(None))
    return await paginate(
        session, query, ApiKey.created_at.desc(), ApiKey.id, limit=limit, offset=offset
    )


async def revoke_key(session: AsyncSession, scope: TenantScope, key_id: uuid.UUID) -> None:
    row = await scope.get(session, ApiKey, ApiKey.id, key_id, resource="API key", for_update=True)
    if row.revoked_at is not None:
        raise NotFoundError("API key", key_id)
    row.revoked_at = datetime.now(UTC)
    await session.flush()


async def find_active_key(session: AsyncSession, presented: str) -> tuple[ApiKey, Tenant] | None:
    """The unrevoked key matching `presented` (compared in constant time) and its tenant."""
    if not presented.startswith(KEY_PREFIX) or len(presented) < DISPLAY_PREFIX_LENGTH:
        return None
    candidates = await session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.tenant_id == ApiKey.tenant_id)
        .where(ApiKey.prefix == presented[:DISPLAY_PREFIX_LENGTH], ApiKey.revoked_at.is_(None))
    )
    digest = hash_key(presented)
    match = None
    for key, tenant in candidates:
        if hmac.compare_digest(key.key_hash, digest):
            match = (key, tenant)
    return match


def last_used_is_stale(key: ApiKey) -> bool:
    return key.last_used_at is None or datetime.now(UTC) - key.last_used_at >= LAST_USED_RESOLUTION


async def touch_last_used(session: AsyncSession, key_id: uuid.UUID) -> None:
    """Stamp the key, at most once per resolution: of concurrent requests on one key the
    first stamps it and the others, once it commits, find it fresh and write nothing."""
    now = datetime.now(UTC)
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
    )
