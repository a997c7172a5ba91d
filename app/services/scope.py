"""Tenant scoping: every query on a tenant-owned table starts here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.errors import NotFoundError


class TenantOwned(Protocol):
    tenant_id: Any


M = TypeVar("M", bound=TenantOwned)


@dataclass(frozen=True, slots=True)
class TenantScope:
    """The tenant a request acts inside, established by authentication."""

    tenant_id: str

    def select(self, model: type[M]) -> Select[M]:
        return select(model).where(model.tenant_id == self.tenant_id)

    async def get(
        self,
        session: AsyncSession,
        model: type[M],
        key: InstrumentedAttribute[Any],
        value: object,
        *,
        resource: str,
        for_update: bool = False,
    ) -> M:
        """The tenant's row whose `key` is `value`; 404 if it has none (or another tenant has it)."""
        query = self.select(model).where(key == value)
        if for_update:
            query = query.with_for_update()
        row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFoundError(resource, value)
        return row
