"""Concurrent requests: duplicate creates, deletes racing with the rows that use what
they delete, and many first uses of one key on a small pool. No 500s, no half states."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text

from app.main import create_app
from tests.conftest import ADMIN, TenantFixture, create_tenant, make_settings, reset_database
from tests.integration.test_models import NEW_MODEL


async def test_duplicate_tenant_creates_give_one_201(client: httpx.AsyncClient) -> None:
    body = {"tenant_id": "racer", "name": "R"}
    responses = await asyncio.gather(
        *(client.post("/api/tenants", json=body, headers=ADMIN) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    assert all(
        r.json()["error"]["code"] == "TENANT_EXISTS" for r in responses if r.status_code == 409
    )


async def test_duplicate_model_creates_give_one_201(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(client.post("/api/models", json=NEW_MODEL, headers=ADMIN) for _ in range(6))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 5


async def test_model_delete_racing_conversation_create(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    for round_number in range(6):
        model_id = f"claude-race-{round_number}"
        created = await client.post(
            "/api/models", json={**NEW_MODEL, "model_id": model_id}, headers=ADMIN
        )
        assert created.status_code == 201
        deleted, conversation = await asyncio.gather(
            client.delete(f"/api/models/{model_id}", headers=ADMIN),
            client.post(
                tenant.url("/conversations"), json={"model_id": model_id}, headers=tenant.headers
            ),
        )
        assert deleted.status_code in (204, 409), deleted.text
        assert conversation.status_code in (201, 422), conversation.text
        # Exactly one of them won, and the database agrees.
        assert (deleted.status_code == 204) != (conversation.status_code == 201)
        if conversation.status_code == 422:
            assert conversation.json()["error"]["code"] == "UNKNOWN_MODEL"
        async with app.state.engine.connect() as conn:
            models = await conn.scalar(
                text("SELECT count(*) FROM models WHERE model_id = :m"), {"m": model_id}
            )
            using = await conn.scalar(
                text("SELECT count(*) FROM conversations WHERE model_id = :m"), {"m": model_id}
            )
        assert (models, using) == ((0, 0) if deleted.status_code == 204 else (1, 1))


async def test_tenant_delete_racing_its_writes(client: httpx.AsyncClient, app: FastAPI) -> None:
    for round_number in range(4):
        tenant = await create_tenant(client, f"doomed-{round_number}")
        results = await asyncio.gather(
            client.delete(tenant.url(), headers=ADMIN),
            client.post(tenant.url("/conversations"), json={}, headers=tenant.headers),
            client.post(tenant.url("/api-keys"), json={"name": "late"}, headers=ADMIN),
        )
        assert results[0].status_code == 204
        assert results[1].status_code in (201, 401, 404), results[1].text
        assert results[2].status_code in (201, 404), results[2].text
        async with app.state.engine.connect() as conn:
            for table in ("api_keys", "conversations", "conversation_counts"):
                left = await conn.scalar(
                    text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"),  # noqa: S608
                    {"t": tenant.tenant_id},
                )
                assert left == 0, table


@pytest.fixture
async def small_pool_client(database_url: URL, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url, tmp_path, db_pool_size=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http
    await reset_database(database_url)


async def test_first_uses_of_a_key_do_not_drain_the_pool(
    small_pool_client: httpx.AsyncClient,
) -> None:
    tenant = await create_tenant(small_pool_client, "busy")
    responses = await asyncio.gather(
        *(
            small_pool_client.get(tenant.url("/conversations"), headers=tenant.headers)
            for _ in range(12)
        )
    )
    assert [r.status_code for r in responses] == [200] * 12
    keys = (await small_pool_client.get(tenant.url("/api-keys"), headers=ADMIN)).json()["items"]
    assert keys[0]["last_used_at"] is not None
