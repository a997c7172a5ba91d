"""The object store behind one interface, on the local filesystem and on S3 (moto's
server mode): the same behaviour from both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.config import Settings, StorageSettings
from app.services.storage import ObjectStore, create_store
from tests.conftest import s3_storage


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[ObjectStore]:
    if request.param == "local":
        yield create_store(StorageSettings(), tmp_path)
        return
    yield create_store(s3_storage(s3_endpoint), tmp_path)


async def test_put_get_head_list_delete(store: ObjectStore) -> None:
    await store.put("acme/blobs/ab/cdef", b"hello world")
    await store.put("acme/blobs/ab/0123", b"x" * 1000)
    await store.put("globex/blobs/ab/cdef", b"other tenant")
    assert await store.get("acme/blobs/ab/cdef") == b"hello world"
    info = await store.head("acme/blobs/ab/cdef")
    assert info is not None and info.size == 11 and info.key == "acme/blobs/ab/cdef"
    assert await store.head("acme/blobs/missing") is None
    listed = sorted([i.key async for i in store.list("acme/")])
    assert listed == ["acme/blobs/ab/0123", "acme/blobs/ab/cdef"]
    with pytest.raises(FileNotFoundError):
        await store.get("acme/blobs/missing")
    await store.delete("acme/blobs/ab/cdef")
    await store.delete("acme/blobs/ab/cdef")  # already gone: not an error
    assert await store.head("acme/blobs/ab/cdef") is None
    assert [i.key async for i in store.list("globex")] == ["globex/blobs/ab/cdef"]


async def test_streams_and_ranges(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    await store.put("t/big", data)
    assert b"".join([c async for c in store.stream("t/big")]) == data
    assert b"".join([c async for c in store.stream("t/big", start=10, end=20)]) == data[10:20]
    assert b"".join([c async for c in store.stream("t/big", start=len(data) - 5)]) == data[-5:]


def test_storage_settings_are_nested(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE__BACKEND", "s3")
    monkeypatch.setenv("STORAGE__BUCKET", "files")
    monkeypatch.setenv("STORAGE__ENDPOINT_URL", "http://127.0.0.1:9000")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.storage.backend == "s3" and settings.storage.bucket == "files"
    monkeypatch.delenv("STORAGE__BUCKET")
    with pytest.raises(ValueError, match="STORAGE__BUCKET"):
        Settings(_env_file=None)  # type: ignore[call-arg]
