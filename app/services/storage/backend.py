"""The object store on obstore, one async API over the local filesystem and S3 (and
S3-compatible stores through an endpoint URL): chosen over two hand-written backends so
that streaming, ranges, multipart uploads and retries are the library's, alike for both."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import obstore
from obstore.store import LocalStore, S3Store

from app.config import StorageSettings
from app.services.storage import ObjectInfo

STREAM_CHUNK = 256 * 1024


def _info(meta: Any) -> ObjectInfo:
    return ObjectInfo(str(meta["path"]), int(meta["size"]), meta["last_modified"])


class ObstoreStore:
    def __init__(self, store: LocalStore | S3Store) -> None:
        self._store = store

    @classmethod
    def from_settings(cls, settings: StorageSettings, data_dir: Path) -> ObstoreStore:
        if settings.backend == "local":
            root = (settings.root or data_dir / "objects").resolve()
            root.mkdir(parents=True, exist_ok=True)
            return cls(LocalStore(root, mkdir=True))
        assert settings.bucket, "STORAGE__BUCKET is required for s3"
        options: dict[str, Any] = {}
        if settings.endpoint_url:
            options["endpoint"] = settings.endpoint_url
            options["client_options"] = {"allow_http": settings.endpoint_url.startswith("http:")}
        if settings.access_key_id and settings.secret_access_key:
            options["access_key_id"] = settings.access_key_id
            options["secret_access_key"] = settings.secret_access_key.get_secret_value()
        store = S3Store(
            settings.bucket, prefix=settings.prefix or None, region=settings.region, **options
        )
        return cls(store)

    async def put(self, key: str, data: bytes) -> None:
        await obstore.put_async(self._store, key, data)

    async def get(self, key: str) -> bytes:
        result = await obstore.get_async(self._store, key)
        return bytes(await result.bytes_async())

    async def stream(
        self, key: str, *, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        if end is not None and end <= (start or 0):
            return  # an empty range: nothing to fetch (and stores refuse one)
        options: dict[str, Any] = {}
        if start is not None or end is not None:
            options["range"] = (start or 0, end) if end is not None else {"offset": start}
        result = await obstore.get_async(self._store, key, options=options)  # type: ignore[arg-type]
        async for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
            yield bytes(chunk)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            return _info(await obstore.head_async(self._store, key))
        except FileNotFoundError:
            return None

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for batch in obstore.list(self._store, prefix=prefix.rstrip("/") or None):
            for meta in batch:
                yield _info(meta)

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await obstore.delete_async(self._store, key)
