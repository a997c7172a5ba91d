"""Workspace files and their versions, as the API shows them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from app.schemas.common import ReadSchema

FileSource = Literal[
    "user_upload", "agent_created", "agent_modified", "agent_deleted", "user_deleted"
]


class WorkspaceFileRead(ReadSchema):
    path: str
    version: int
    size: int
    sha256: str | None
    mime_type: str
    presented: bool
    created_at: datetime
    updated_at: datetime


class WorkspaceFileVersionRead(ReadSchema):
    version: int
    size: int
    sha256: str | None
    source: FileSource
    run_id: uuid.UUID | None
    user_id: str | None
    created_at: datetime
