"""Alembic environment: async engine, one migration run at a time (advisory lock)."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import URL, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import to_async_url
from app.models import Base

# Any number fits, as long as nothing else in the database takes the same lock.
MIGRATION_LOCK_ID = 7_340_001

target_metadata = Base.metadata


def _url() -> URL:
    url = context.config.attributes.get("database_url")
    if url is not None:
        return url  # type: ignore[no-any-return]
    env_url = os.environ.get("DATABASE_URL")
    if not env_url:
        raise RuntimeError("Set DATABASE_URL to run Alembic from the command line")
    return to_async_url(env_url)


def _run(connection: Connection) -> None:
    # A session-level lock: it outlives the transaction that takes it.
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    connection.commit()
    try:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
        connection.commit()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("Offline (SQL script) migrations are not supported")
asyncio.run(_run_async())
