"""A tenant's secrets: encrypted at rest (Fernet; new writes with the first of the
service's keys, reads with any of them, so keys rotate), write-only in the API, and
decrypted only in the service, for the MCP servers whose config names them."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFoundError, ServiceUnavailableError
from app.models import TenantSecret
from app.services.pagination import paginate
from app.services.scope import TenantScope


def _fernet(key: str) -> Fernet:
    """A Fernet key as given, or one derived from any other secret text."""
    try:
        return Fernet(key)
    except ValueError:
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


class Vault:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("the vault needs at least one key")
        self._fernet = MultiFernet([_fernet(k) for k in keys])

    def encrypt(self, value: str) -> bytes:
        return self._fernet.encrypt(value.encode())

    def decrypt(self, token: bytes) -> str:
        return self._fernet.decrypt(token).decode()

    def rotate(self, token: bytes) -> bytes:
        """The token re-encrypted with the first key."""
        return self._fernet.rotate(token)


class SecretUnreadableError(ServiceUnavailableError):
    """A stored secret that none of the service's keys decrypts (a key was dropped)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"The secret {name} cannot be decrypted with the service's keys (SECRETS_KEYS); "
            "set it again",
            code="SECRET_UNREADABLE",
        )


async def put_secret(
    session: AsyncSession, vault: Vault, scope: TenantScope, name: str, value: str
) -> tuple[TenantSecret, bool]:
    """Set the secret; True if it is new."""
    row = await session.get(TenantSecret, (scope.tenant_id, name), with_for_update=True)
    created = row is None
    if row is None:
        row = TenantSecret(tenant_id=scope.tenant_id, name=name, ciphertext=vault.encrypt(value))
        session.add(row)
    else:
        row.ciphertext = vault.encrypt(value)
    await session.flush()
    await session.refresh(row)
    return row, created


async def list_secrets(
    session: AsyncSession, scope: TenantScope, *, limit: int, offset: int
) -> tuple[list[TenantSecret], int]:
    query = scope.select(TenantSecret).order_by(TenantSecret.name)
    return await paginate(session, query, limit=limit, offset=offset)


async def delete_secret(session: AsyncSession, scope: TenantScope, name: str) -> None:
    row = await session.get(TenantSecret, (scope.tenant_id, name), with_for_update=True)
    if row is None:
        raise NotFoundError("Secret", name)
    await session.delete(row)
    await session.flush()


async def secret_names(session: AsyncSession, tenant_id: str) -> set[str]:
    return set(
        await session.scalars(select(TenantSecret.name).where(TenantSecret.tenant_id == tenant_id))
    )


async def read_secrets(
    session: AsyncSession, vault: Vault, tenant_id: str, names: Iterable[str]
) -> dict[str, str]:
    """The values of the named secrets the tenant has (missing ones are left out)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = await session.scalars(
        select(TenantSecret).where(
            TenantSecret.tenant_id == tenant_id, TenantSecret.name.in_(wanted)
        )
    )
    values = {}
    for row in rows:
        try:
            values[row.name] = vault.decrypt(row.ciphertext)
        except InvalidToken as exc:
            raise SecretUnreadableError(row.name) from exc
    return values
