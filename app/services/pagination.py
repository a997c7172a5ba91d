"""One page of a query plus the count of all its rows."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


async def paginate(
    session: AsyncSession,
    query: Select[T],
    *order_by: Any,
    limit: int,
    offset: int,
    total: int | None = None,
) -> tuple[list[T], int]:
    """`total` may be given when the caller knows it more cheaply than COUNT(*)."""
    if total is None:
        total = await session.scalar(
            select(func.count()).select_from(query.order_by(None).subquery())
        )
    rows = await session.scalars(query.order_by(*order_by).limit(limit).offset(offset))
    return list(rows), total or 0
