"""The PostgreSQL SessionStore passes the SDK's own conformance suite."""

from __future__ import annotations

from claude_agent_sdk.testing import run_session_store_conformance
from fastapi import FastAPI
from sqlalchemy import text

from app.services.execute.session_store import PostgresSessionStore


async def test_conformance(app: FastAPI) -> None:
    async def fresh_store() -> PostgresSessionStore:
        async with app.state.engine.begin() as conn:
            await conn.execute(text("TRUNCATE sdk_session_entries"))
        return PostgresSessionStore(app.state.sessionmaker)

    await run_session_store_conformance(fresh_store)
