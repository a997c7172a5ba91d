"""What nodes tell each other about runs: a PostgreSQL NOTIFY on one channel, sent in the
sender's transaction, so it is delivered only if that commits (see services.cluster)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "cmab_runs"


async def notify(session: AsyncSession, *words: object) -> None:
    """Say something on the channel when `session`'s transaction commits."""
    await session.execute(select(func.pg_notify(CHANNEL, " ".join(str(w) for w in words))))
