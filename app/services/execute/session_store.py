"""SDK transcripts in PostgreSQL: the SDK's SessionStore protocol over sdk_session_entries,
so any worker can resume any conversation. The project key is the tenant id."""

from __future__ import annotations

from typing import Any, cast

from claude_agent_sdk.types import (
    SessionKey,
    SessionListSubkeysKey,
    SessionStoreEntry,
    SessionStoreListEntry,
)
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import SdkSessionEntry
from app.utils.text import storable


class PostgresSessionStore:
    """A SessionStore (duck-typed, as the SDK probes for optional methods). The optional
    `list_session_summaries` is absent: listing falls back to `list_sessions` + `load`."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        if not entries:
            return
        rows = [
            {
                "project_key": key["project_key"],
                "session_id": key["session_id"],
                "subpath": key.get("subpath", ""),
                "uuid": entry.get("uuid") if isinstance(entry.get("uuid"), str) else None,
                # A transcript may quote a NUL character: jsonb refuses it.
                "entry": storable(dict(entry)),
            }
            for entry in entries
        ]
        # Entries with a uuid are idempotent (the SDK retries failed batches).
        statement = (
            insert(SdkSessionEntry)
            .values(rows)
            .on_conflict_do_nothing(
                index_elements=["project_key", "session_id", "subpath", "uuid"],
                index_where=SdkSessionEntry.uuid.is_not(None),
            )
        )
        async with self._sessionmaker() as session, session.begin():
            await session.execute(statement)

    async def load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        async with self._sessionmaker() as session:
            entries = (
                await session.scalars(
                    select(SdkSessionEntry.entry)
                    .where(*self._where(key))
                    .order_by(SdkSessionEntry.id)
                )
            ).all()
        return [cast(SessionStoreEntry, e) for e in entries] if entries else None

    async def list_sessions(self, project_key: str) -> list[SessionStoreListEntry]:
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(SdkSessionEntry.session_id, func.max(SdkSessionEntry.created_at))
                .where(SdkSessionEntry.project_key == project_key, SdkSessionEntry.subpath == "")
                .group_by(SdkSessionEntry.session_id)
            )
            return [
                {"session_id": session_id, "mtime": int(modified.timestamp() * 1000)}
                for session_id, modified in rows
            ]

    async def delete(self, key: SessionKey) -> None:
        """A main-transcript key takes its sub-agent transcripts with it."""
        conditions: list[Any] = [
            SdkSessionEntry.project_key == key["project_key"],
            SdkSessionEntry.session_id == key["session_id"],
        ]
        if "subpath" in key:
            conditions.append(SdkSessionEntry.subpath == key["subpath"])
        async with self._sessionmaker() as session, session.begin():
            await session.execute(delete(SdkSessionEntry).where(*conditions))

    async def list_subkeys(self, key: SessionListSubkeysKey) -> list[str]:
        async with self._sessionmaker() as session:
            rows = await session.scalars(
                select(SdkSessionEntry.subpath)
                .where(
                    SdkSessionEntry.project_key == key["project_key"],
                    SdkSessionEntry.session_id == key["session_id"],
                    SdkSessionEntry.subpath != "",
                )
                .distinct()
            )
            return list(rows)

    @staticmethod
    def _where(key: SessionKey) -> list[Any]:
        return [
            SdkSessionEntry.project_key == key["project_key"],
            SdkSessionEntry.session_id == key["session_id"],
            SdkSessionEntry.subpath == key.get("subpath", ""),
        ]
