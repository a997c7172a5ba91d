"""Service nodes: each process that serves the API or runs agents, with its heartbeat."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class Node(Base):
    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    roles: Mapped[list[str]]
    started_at: Mapped[datetime] = mapped_column(server_default=func.now())
    heartbeat_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # As of its last heartbeat: runs it is running, warm sessions it holds, and how many
    # runs it may run at once.
    running: Mapped[int] = mapped_column(server_default="0")
    warm: Mapped[int] = mapped_column(server_default="0")
    capacity: Mapped[int] = mapped_column(server_default="0")
