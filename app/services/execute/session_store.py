"""SDK transcripts in PostgreSQL: the SDK's SessionStore protocol over sdk_session_entries,
so any node can resume any conversation.

The SDK keys a transcript by its project: the agent's working directory, sanitized. That
directory is under each node's own DATA_DIR, so the node's part of the key is replaced
by `ws`: the same conversation has the same key on every node."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from claude_agent_sdk import project_key_for_directory
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

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], workspaces: Path | None = None
    ) -> None:
        self._sessionmaker = sessionmaker
        # This node's workspaces directory, as the start of a project key.
        self._local = f"{project_key_for_directory(workspaces)}-" if workspaces else None

    def _project(self, project_key: str) -> str:
        """The key every node knows a project by."""
        if self._local is not None and project_key.startswith(self._local):
            return "ws-" + project_key.removeprefix(self._local)
        return project_key

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        if not entries:
            return
        rows = [
            {
                "project_key": self._project(key["project_key"]),
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
            for project in dict.fromkeys((self._project(key["project_key"]), key["project_key"])):
                # (The node's own key: transcripts stored before keys were shared.)
                entries = (
                    await session.scalars(
                        select(SdkSessionEntry.entry)
                        .where(*self._where({**key, "project_key": project}))
                        .order_by(SdkSessionEntry.id)
                    )
                ).all()
                if entries:
                    return [cast(SessionStoreEntry, e) for e in entries]
        return None

    async def list_sessions(self, project_key: str) -> list[SessionStoreListEntry]:
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(SdkSessionEntry.session_id, func.max(SdkSessionEntry.created_at))
                .where(
                    SdkSessionEntry.project_key == self._project(project_key),
                    SdkSessionEntry.subpath == "",
                )
                .group_by(SdkSessionEntry.session_id)
            )
            return [
                {"session_id": session_id, "mtime": int(modified.timestamp() * 1000)}
                for session_id, modified in rows
            ]

    async def delete(self, key: SessionKey) -> None:
        """A main-transcript key takes its sub-agent transcripts with it."""
        conditions: list[Any] = [
            SdkSessionEntry.project_key == self._project(key["project_key"]),
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
                    SdkSessionEntry.project_key == self._project(key["project_key"]),
                    SdkSessionEntry.session_id == key["session_id"],
                    SdkSessionEntry.subpath != "",
                )
                .distinct()
            )
            return list(rows)

    def _where(self, key: SessionKey) -> list[Any]:
        return [
            SdkSessionEntry.project_key == self._project(key["project_key"]),
            SdkSessionEntry.session_id == key["session_id"],
            SdkSessionEntry.subpath == key.get("subpath", ""),
        ]
