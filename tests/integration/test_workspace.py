"""Workspace files through the API: uploads, versions and their sources, downloads of any
version with ranges, deletes that keep the history, path rules, isolation, and what a
delete removes from the store."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL

from app.config import StorageSettings
from app.main import create_app
from app.services.workspace import FileCaps
from tests.conftest import (
    ADMIN,
    TenantFixture,
    assert_error,
    make_settings,
    reset_database,
    s3_storage,
)
from tests.integration.execute.streams import new_conversation


@pytest.fixture(params=["local", "s3"])
async def app(
    request: pytest.FixtureRequest, database_url: URL, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[FastAPI]:
    """Every test here runs on both storage backends."""
    storage = s3_storage(s3_endpoint) if request.param == "s3" else StorageSettings()
    application = create_app(make_settings(database_url, tmp_path, storage=storage))
    async with application.router.lifespan_context(application):
        yield application
    await reset_database(database_url)


def files(tenant: TenantFixture, cid: str, path: str = "") -> str:
    return tenant.url(f"/conversations/{cid}/files{'/' + path if path else ''}")


async def test_versions_downloads_and_deletes(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    headers = {**tenant.headers, "X-User-ID": "alice"}
    put = await client.put(files(tenant, cid, "notes/a.md"), content=b"one", headers=headers)
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1 and put.json()["mime_type"] == "text/markdown"
    same = await client.put(files(tenant, cid, "notes/a.md"), content=b"one", headers=headers)
    assert same.json()["version"] == 1  # unchanged content: no new version
    await client.put(files(tenant, cid, "notes/a.md"), content=b"two!", headers=headers)
    await client.put(files(tenant, cid, "b.txt"), content=b"bee", headers=headers)

    listed = (await client.get(files(tenant, cid), headers=headers)).json()
    assert [(f["path"], f["version"], f["size"]) for f in listed["items"]] == [
        ("b.txt", 1, 3),
        ("notes/a.md", 2, 4),
    ]
    assert listed["total"] == 2
    prefixed = await client.get(files(tenant, cid), params={"prefix": "notes/"}, headers=headers)
    assert [f["path"] for f in prefixed.json()["items"]] == ["notes/a.md"]

    current = await client.get(files(tenant, cid, "notes/a.md"), headers=headers)
    assert current.content == b"two!"
    assert current.headers["etag"] == f'"{hashlib.sha256(b"two!").hexdigest()}"'
    assert "a.md" in current.headers["content-disposition"]
    old = await client.get(files(tenant, cid, "notes/a.md"), params={"version": 1}, headers=headers)
    assert old.content == b"one"
    part = await client.get(
        files(tenant, cid, "notes/a.md"), headers={**headers, "Range": "bytes=1-2"}
    )
    assert part.status_code == 206 and part.content == b"wo"
    assert part.headers["content-range"] == "bytes 1-2/4"
    tail = await client.get(
        files(tenant, cid, "notes/a.md"), headers={**headers, "Range": "bytes=-3"}
    )
    assert tail.content == b"wo!"
    bad_range = await client.get(
        files(tenant, cid, "notes/a.md"), headers={**headers, "Range": "bytes=9-"}
    )
    assert_error(bad_range, 416, "RANGE_NOT_SATISFIABLE")

    deleted = await client.delete(files(tenant, cid, "notes/a.md"), headers=headers)
    assert deleted.status_code == 204
    assert_error(await client.get(files(tenant, cid, "notes/a.md"), headers=headers), 404)
    assert_error(await client.delete(files(tenant, cid, "notes/a.md"), headers=headers), 404)
    history = (await client.get(files(tenant, cid, "notes/a.md/versions"), headers=headers)).json()
    assert [(v["version"], v["source"], v["user_id"]) for v in history["items"]] == [
        (3, "user_deleted", "alice"),
        (2, "user_upload", "alice"),
        (1, "user_upload", "alice"),
    ]
    still = await client.get(
        files(tenant, cid, "notes/a.md"), params={"version": 2}, headers=headers
    )
    assert still.content == b"two!"
    assert [
        f["path"] for f in (await client.get(files(tenant, cid), headers=headers)).json()["items"]
    ] == ["b.txt"]


@pytest.mark.parametrize(
    "path",
    [
        "%2E%2E/escape.txt",
        "a/%2E%2E/%2E%2E/b",
        ".claude/scheduled_tasks.json",
        "a%5Cb.txt",
        "a%00b",
        "a%01b",
        "a//b",
        "x" * 1100,
        ("n" * 256) + ".txt",
    ],
)
async def test_bad_paths_are_422(
    client: httpx.AsyncClient, tenant: TenantFixture, path: str
) -> None:
    cid = await new_conversation(client, tenant)
    response = await client.put(files(tenant, cid, path), content=b"x", headers=tenant.headers)
    assert response.status_code in (404, 422), response.text
    if response.status_code == 422:
        assert_error(response, 422)


async def test_other_tenants_files_are_404(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    await client.put(files(tenant, cid, "secret.txt"), content=b"s", headers=tenant.headers)
    for method in ("GET", "PUT", "DELETE"):
        for url in (files(tenant, cid, "secret.txt"), files(other_tenant, cid, "secret.txt")):
            response = await client.request(method, url, content=b"x", headers=other_tenant.headers)
            assert_error(response, 404)
    for url in (files(other_tenant, cid), files(other_tenant, cid, "secret.txt/versions")):
        assert_error(await client.get(url, headers=other_tenant.headers), 404)
    body = await client.get(files(tenant, cid, "secret.txt"), headers=tenant.headers)
    assert body.content == b"s"


async def _stored(app: FastAPI, prefix: str) -> list[str]:
    return [info.key async for info in app.state.store.list(prefix)]


async def _until_empty(app: FastAPI, prefix: str) -> list[str]:
    for _ in range(100):
        keys = await _stored(app, prefix)
        if not keys:
            return keys
        await asyncio.sleep(0.05)
    return keys


async def test_deletes_remove_stored_files_and_archives_keep_them(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    kept = await new_conversation(client, tenant)
    dropped = await new_conversation(client, tenant)
    for cid in (kept, dropped):
        await client.put(files(tenant, cid, "a.txt"), content=b"same", headers=tenant.headers)
    await client.post(tenant.url(f"/conversations/{kept}/archive"), headers=tenant.headers)
    assert len(await _stored(app, f"{tenant.tenant_id}/{dropped}/")) == 1
    deleted = await client.delete(tenant.url(f"/conversations/{dropped}"), headers=tenant.headers)
    assert deleted.status_code == 204
    assert await _until_empty(app, f"{tenant.tenant_id}/{dropped}/") == []
    archived = await client.get(files(tenant, kept, "a.txt"), headers=tenant.headers)
    assert archived.content == b"same"  # the same content elsewhere is untouched

    gone = await client.delete(tenant.url(), headers=ADMIN)
    assert gone.status_code == 204
    assert await _until_empty(app, f"{tenant.tenant_id}/") == []


async def test_file_caps_and_the_tenant_quota(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"settings": {"storage_quota_bytes": 10}}, headers=ADMIN)
    cid = await new_conversation(client, tenant)
    ok = await client.put(files(tenant, cid, "a.txt"), content=b"12345678", headers=tenant.headers)
    assert ok.status_code == 200
    over = await client.put(files(tenant, cid, "b.txt"), content=b"12345", headers=tenant.headers)
    assert_error(over, 413, "QUOTA_EXCEEDED")
    grown = await client.put(
        files(tenant, cid, "a.txt"), content=b"123456789", headers=tenant.headers
    )
    assert grown.status_code == 200  # the version it replaces no longer counts
    listed = (await client.get(files(tenant, cid), headers=tenant.headers)).json()
    assert [f["path"] for f in listed["items"]] == ["a.txt"]  # nothing half-written

    # Caps by type: text is held to 4 bytes here, other files to the default of 8.
    app.state.file_caps = FileCaps(8, {"text/*": 4})
    await client.put(tenant.url(), json={"settings": {"storage_quota_bytes": None}}, headers=ADMIN)
    big = await client.put(files(tenant, cid, "c.txt"), content=b"12345", headers=tenant.headers)
    assert_error(big, 413, "FILE_TOO_LARGE")
    assert "text/plain" in big.json()["error"]["message"]
    other = await client.put(files(tenant, cid, "c.bin"), content=b"12345", headers=tenant.headers)
    assert other.status_code == 200
    bigger = await client.put(
        files(tenant, cid, "d.bin"), content=b"123456789", headers=tenant.headers
    )
    assert_error(bigger, 413, "FILE_TOO_LARGE")


async def test_multipart_uploads_are_all_or_nothing(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    both = await client.post(
        files(tenant, cid),
        files=[("files", ("a.txt", b"alpha")), ("files", ("b.bin", b"beta"))],
        data={"paths": ["docs/a.txt", "data/b.bin"]},
        headers=tenant.headers,
    )
    assert both.status_code == 201, both.text
    assert [(f["path"], f["version"]) for f in both.json()] == [
        ("docs/a.txt", 1),
        ("data/b.bin", 1),
    ]
    named = await client.post(
        files(tenant, cid), files=[("files", ("c.md", b"c"))], headers=tenant.headers
    )
    assert [f["path"] for f in named.json()] == ["c.md"]
    refused = await client.post(
        files(tenant, cid),
        files=[("files", ("ok.txt", b"ok")), ("files", ("x", b"x"))],
        data={"paths": ["ok.txt", "../escape"]},
        headers=tenant.headers,
    )
    assert_error(refused, 422, "BAD_PATH")
    mismatched = await client.post(
        files(tenant, cid),
        files=[("files", ("ok.txt", b"ok"))],
        data={"paths": ["a", "b"]},
        headers=tenant.headers,
    )
    assert_error(mismatched, 422)
    listed = (await client.get(files(tenant, cid), headers=tenant.headers)).json()
    assert [f["path"] for f in listed["items"]] == ["c.md", "data/b.bin", "docs/a.txt"]


async def test_concurrent_writes_of_one_new_path(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    responses = await asyncio.gather(
        *(
            client.put(
                files(tenant, cid, "race.txt"), content=f"{n}".encode(), headers=tenant.headers
            )
            for n in range(8)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 409} and 200 in codes, codes
    history = await client.get(files(tenant, cid, "race.txt/versions"), headers=tenant.headers)
    assert history.json()["total"] == codes.count(200)
