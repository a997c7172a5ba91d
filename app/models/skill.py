"""A tenant's Agent Skills and every version of each (their files live in the object
store, content-addressed by sha256; a version's manifest lists them)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TimestampMixin

SKILL_STATUSES = ("active", "disabled")


class Skill(TimestampMixin, Base):
    __tablename__ = "skills"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        UniqueConstraint("tenant_id", "slash_command"),
        CheckConstraint(f"status IN {SKILL_STATUSES!r}", name="status"),
    )

    skill_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.tenant_id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    # From the current version's frontmatter.
    description: Mapped[str] = mapped_column(Text)
    slash_command: Mapped[str] = mapped_column(String(64))
    slash_command_description: Mapped[str | None] = mapped_column(String(1024))
    is_user_selectable: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    current_version: Mapped[int]


class SkillVersion(Base):
    __tablename__ = "skill_versions"

    skill_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("skills.skill_id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.tenant_id", ondelete="CASCADE"), index=True
    )
    # [{"path", "size", "sha256"}, ...] by path
    manifest: Mapped[list[dict[str, Any]]]
    # The SKILL.md frontmatter as parsed.
    frontmatter: Mapped[dict[str, Any]]
    # A digest of the manifest: equal for equal contents.
    digest: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
