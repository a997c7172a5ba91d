"""A conversation's workspace files and every version of each (blobs live in the object
store, content-addressed by sha256)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TimestampMixin

SOURCES = ("user_upload", "agent_created", "agent_modified", "agent_deleted", "user_deleted")


class WorkspaceFile(TimestampMixin, Base):
    __tablename__ = "workspace_files"
    __table_args__ = (UniqueConstraint("conversation_id", "path"),)

    file_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.conversation_id", ondelete="CASCADE")
    )
    path: Mapped[str] = mapped_column(String(1024))
    current_version: Mapped[int]
    size: Mapped[int] = mapped_column(BigInteger)
    # None while the file is deleted (its latest version is a tombstone).
    sha256: Mapped[str | None] = mapped_column(String(64))
    mime_type: Mapped[str] = mapped_column(String(255))
    presented: Mapped[bool] = mapped_column(default=False)
    deleted: Mapped[bool] = mapped_column(default=False)


class WorkspaceFileVersion(Base):
    __tablename__ = "workspace_file_versions"
    __table_args__ = (
        UniqueConstraint("file_id", "version"),
        CheckConstraint(f"source IN {SOURCES!r}", name="source"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    file_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspace_files.file_id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int]
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runs.run_id", ondelete="SET NULL"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
