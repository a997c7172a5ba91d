"""The models catalog: which Claude models tenants may use, and their prices."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, TimestampMixin


class CatalogModel(TimestampMixin, Base):
    __tablename__ = "models"
    __table_args__ = (CheckConstraint("status IN ('active', 'deprecated')", name="status"),)

    model_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    bedrock_model_id: Mapped[str | None] = mapped_column(String(200))
    anthropic_model_id: Mapped[str | None] = mapped_column(String(200))
    price_input: Mapped[Decimal]
    price_output: Mapped[Decimal]
    price_cache_write_5m: Mapped[Decimal]
    price_cache_write_1h: Mapped[Decimal]
    price_cache_read: Mapped[Decimal]
    context_window: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="active")
