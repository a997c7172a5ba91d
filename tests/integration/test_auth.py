"""API keys and authentication: admin keys, tenant keys, revocation, inactive tenants."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import ADMIN, TenantFixture, assert_error, create_tenant


async def test_missing_key_is_401(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/api/models"), 401, "UNAUTHORIZED")
    assert "API key" in error["message"]


async def test_unknown_key_is_401(client: httpx.AsyncClient) -> None:
    for key in ("nope", "cmab_" + "x" * 43, ""):
        assert_error(await client.get("/api/models", headers={"X-API-Key": key}), 401)


async def test_bearer_and_header_both_work(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    by_header = await client.get("/api/models", headers={"X-API-Key": tenant.key})
    by_bearer = await client.get("/api/models", headers={"Authorization": f"Bearer {tenant.key}"})
    assert by_header.status_code == by_bearer.status_code == 200


async def test_key_is_shown_once_and_stored_as_a_hash(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    created = await client.post(tenant.url("/api-keys"), json={"name": "ci"}, headers=ADMIN)
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "key", "prefix", "name", "created_at"}
    assert body["key"].startswith("cmab_") and len(body["key"]) >= 40
    assert body["key"].startswith(body["prefix"]) and body["prefix"] != body["key"]

    listed = (await client.get(tenant.url("/api-keys"), headers=ADMIN)).json()
    assert listed["total"] == 2
    assert all("key" not in item and "key_hash" not in item for item in listed["items"])
    assert {"id", "name", "prefix", "created_at", "last_used_at"} == set(listed["items"][0])

    async with app.state.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT api_keys::text FROM api_keys"))).scalars().all()
    assert rows and not any(body["key"] in row for row in rows)


async def test_last_used_is_recorded(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    before = (await client.get(tenant.url("/api-keys"), headers=ADMIN)).json()["items"][0]
    assert before["last_used_at"] is None
    await client.get("/api/models", headers=tenant.headers)
    after = (await client.get(tenant.url("/api-keys"), headers=ADMIN)).json()["items"][0]
    assert after["last_used_at"] is not None


async def test_revoked_key_stops_working_at_once(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    assert (
        await client.get(tenant.url("/conversations"), headers=tenant.headers)
    ).status_code == 200
    revoked = await client.delete(tenant.url(f"/api-keys/{tenant.key_id}"), headers=ADMIN)
    assert revoked.status_code == 204
    assert_error(await client.get(tenant.url("/conversations"), headers=tenant.headers), 401)
    assert (await client.get(tenant.url("/api-keys"), headers=ADMIN)).json()["total"] == 0
    again = await client.delete(tenant.url(f"/api-keys/{tenant.key_id}"), headers=ADMIN)
    assert_error(again, 404, "NOT_FOUND")


async def test_key_of_inactive_tenant_is_403(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"status": "inactive"}, headers=ADMIN)
    response = await client.get(tenant.url("/conversations"), headers=tenant.headers)
    assert_error(response, 403, "TENANT_INACTIVE")
    await client.put(tenant.url(), json={"status": "active"}, headers=ADMIN)
    assert (
        await client.get(tenant.url("/conversations"), headers=tenant.headers)
    ).status_code == 200


async def test_admin_routes_refuse_tenant_keys(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    h = tenant.headers
    model = {"display_name": "x"}
    for response in (
        await client.get("/api/tenants", headers=h),
        await client.post("/api/tenants", json={"tenant_id": "evil", "name": "e"}, headers=h),
        await client.get(tenant.url(), headers=h),
        await client.put(tenant.url(), json={"name": "mine"}, headers=h),
        await client.delete(tenant.url(), headers=h),
        await client.get(tenant.url("/api-keys"), headers=h),
        await client.post(tenant.url("/api-keys"), json={"name": "k"}, headers=h),
        await client.delete(tenant.url(f"/api-keys/{tenant.key_id}"), headers=h),
        await client.put("/api/models/claude-sonnet-4-5", json=model, headers=h),
        await client.patch(
            "/api/models/claude-sonnet-4-5/status", json={"status": "deprecated"}, headers=h
        ),
        await client.delete("/api/models/claude-haiku-4-5", headers=h),
    ):
        assert_error(response, 403, "FORBIDDEN")
    assert (await client.get(tenant.url(), headers=ADMIN)).json()["name"] == "acme"


async def test_api_keys_of_missing_tenant_are_404(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.post("/api/tenants/ghost/api-keys", json={"name": "k"}, headers=ADMIN), 404
    )
    assert_error(await client.get("/api/tenants/ghost/api-keys", headers=ADMIN), 404)


async def test_a_tenant_cannot_revoke_another_tenants_key(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    other = await create_tenant(client, "globex")
    response = await client.delete(tenant.url(f"/api-keys/{other.key_id}"), headers=ADMIN)
    assert_error(response, 404)
    assert (await client.get("/api/models", headers=other.headers)).status_code == 200
