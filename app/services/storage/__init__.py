"""The object store: the truth of what is stored outside PostgreSQL (workspace blobs,
later skills), behind one interface; the backend is chosen at start from settings
(`STORAGE__BACKEND=local|s3`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from app.config import StorageSettings


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


class ObjectStore(Protocol):
    """Keys are relative POSIX paths ("tenant/blobs/ab/cd…"); a missing key is
    `FileNotFoundError`."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    def stream(
        self, key: str, *, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The object's bytes (or those in [start, end)) as they arrive."""
        ...

    async def head(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]: ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing one is not an error."""
        ...


def create_store(settings: StorageSettings, data_dir: Path) -> ObjectStore:
    """The store the settings name: the local filesystem (under STORAGE__ROOT, by default
    DATA_DIR/objects) or an S3 bucket (any S3-compatible endpoint)."""
    from app.services.storage.backend import ObstoreStore

    return ObstoreStore.from_settings(settings, data_dir)
