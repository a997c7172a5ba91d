"""Tenants: create, read, update, delete (admin)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import ADMIN, TenantFixture, assert_error


async def test_create_with_defaults(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/tenants", json={"tenant_id": "acme", "name": "Acme"}, headers=ADMIN
    )
    assert response.status_code == 201
    body = response.json()
    assert body["default_model_id"] == "claude-sonnet-4-5"
    assert body["status"] == "active"
    assert body["settings"] == {
        "max_concurrent_runs": 5,
        "max_turns": 50,
        "monthly_budget_usd": None,
        "user_monthly_budget_usd": None,
        "user_budgets": {},
        "time_zone": "UTC",
        "run_reservation_usd": "1.00",
        "bash_enabled": False,
        "web_fetch_enabled": False,
        "web_search_enabled": False,
        "storage_quota_bytes": 1024**3,
        "tools": None,
    }


async def test_create_with_everything(client: httpx.AsyncClient) -> None:
    body = {
        "tenant_id": "acme-2",
        "name": "Acme Two",
        "system_prompt": "You help Acme.",
        "default_model_id": "claude-haiku-4-5",
        "status": "inactive",
        "settings": {
            "max_concurrent_runs": 2,
            "max_turns": 10,
            "monthly_budget_usd": "250.50",
            "user_monthly_budget_usd": "20.00",
            "user_budgets": {"alice": "50.00"},
            "time_zone": "Europe/Paris",
            "run_reservation_usd": "0.50",
            "bash_enabled": True,
            "web_fetch_enabled": True,
            "web_search_enabled": False,
            "storage_quota_bytes": 5_000_000,
            "tools": ["Read", "Grep", "Bash"],
        },
    }
    response = await client.post("/api/tenants", json=body, headers=ADMIN)
    assert response.status_code == 201
    got = (await client.get("/api/tenants/acme-2", headers=ADMIN)).json()
    for key in ("name", "system_prompt", "default_model_id", "status", "settings"):
        assert got[key] == body[key]


async def test_duplicate_is_409(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    response = await client.post(
        "/api/tenants", json={"tenant_id": "acme", "name": "Again"}, headers=ADMIN
    )
    assert_error(response, 409, "TENANT_EXISTS")
    assert (await client.get("/api/tenants/acme", headers=ADMIN)).json()["name"] == "acme"


async def test_slug_rules(client: httpx.AsyncClient) -> None:
    for bad in ("A", "a", "-abc", "ab_c", "Acme", "a" * 64, "ab c", "ab\x00"):
        response = await client.post(
            "/api/tenants", json={"tenant_id": bad, "name": "x"}, headers=ADMIN
        )
        assert_error(response, 422, "VALIDATION_ERROR")
    ok = await client.post("/api/tenants", json={"tenant_id": "a" * 63, "name": "x"}, headers=ADMIN)
    assert ok.status_code == 201
    assert (await client.get("/api/tenants", headers=ADMIN)).json()["total"] == 1


async def test_default_model_must_exist_and_be_active(client: httpx.AsyncClient) -> None:
    missing = {"tenant_id": "acme", "name": "A", "default_model_id": "gpt-4"}
    assert_error(
        await client.post("/api/tenants", json=missing, headers=ADMIN), 422, "UNKNOWN_MODEL"
    )
    deprecated = {**missing, "default_model_id": "claude-3-5-haiku"}
    assert_error(
        await client.post("/api/tenants", json=deprecated, headers=ADMIN), 422, "MODEL_DEPRECATED"
    )
    assert (await client.get("/api/tenants", headers=ADMIN)).json()["total"] == 0


async def test_settings_are_validated(client: httpx.AsyncClient) -> None:
    for settings in (
        {"max_concurrent_runs": 0},
        {"max_turns": -1},
        {"monthly_budget_usd": "-5"},
        {"monthly_budget_usd": "1.001"},
        {"monthly_budget_usd": "NaN"},
        {"bash_enabled": "sometimes"},
        {"unknown_setting": 1},
        {"tools": ["Read", "SendMessage"]},
        {"tools": ["read"]},
        {"tools": "Read"},
    ):
        body = {"tenant_id": "acme", "name": "A", "settings": settings}
        assert_error(await client.post("/api/tenants", json=body, headers=ADMIN), 422)


async def test_list_is_paginated(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.post(
            "/api/tenants", json={"tenant_id": f"t{i}", "name": f"T{i}"}, headers=ADMIN
        )
    page = (await client.get("/api/tenants?limit=2&offset=1", headers=ADMIN)).json()
    assert page["total"] == 5
    assert [t["tenant_id"] for t in page["items"]] == ["t1", "t2"]
    await client.put("/api/tenants/t3", json={"status": "inactive"}, headers=ADMIN)
    inactive = (await client.get("/api/tenants?status=inactive", headers=ADMIN)).json()
    assert [t["tenant_id"] for t in inactive["items"]] == ["t3"]
    assert_error(await client.get("/api/tenants?limit=201", headers=ADMIN), 422)
    assert_error(await client.get("/api/tenants?offset=-1", headers=ADMIN), 422)


async def test_update_changes_only_what_is_sent(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"settings": {"max_turns": 7}}, headers=ADMIN)
    response = await client.put(
        tenant.url(),
        json={"system_prompt": "Be brief.", "settings": {"bash_enabled": True}},
        headers=ADMIN,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "acme"
    assert body["system_prompt"] == "Be brief."
    assert body["settings"]["max_turns"] == 7
    assert body["settings"]["bash_enabled"] is True
    assert body["updated_at"] > body["created_at"]
    cleared = await client.put(tenant.url(), json={"system_prompt": None}, headers=ADMIN)
    assert cleared.json()["system_prompt"] is None


async def test_update_rejects_bad_values(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    for body, code in (
        ({"name": None}, "VALIDATION_ERROR"),
        ({"name": ""}, "VALIDATION_ERROR"),
        ({"status": "paused"}, "VALIDATION_ERROR"),
        ({"default_model_id": "nope"}, "UNKNOWN_MODEL"),
        ({"default_model_id": "claude-3-5-haiku"}, "MODEL_DEPRECATED"),
        ({"settings": {"max_turns": 0}}, "VALIDATION_ERROR"),
        ({"tenant_id": "renamed"}, "VALIDATION_ERROR"),
    ):
        assert_error(await client.put(tenant.url(), json=body, headers=ADMIN), 422, code)
    got = (await client.get(tenant.url(), headers=ADMIN)).json()
    assert got["name"] == "acme" and got["default_model_id"] == "claude-sonnet-4-5"


async def test_missing_tenant_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/tenants/ghost", headers=ADMIN), 404, "NOT_FOUND")
    assert_error(await client.put("/api/tenants/ghost", json={"name": "x"}, headers=ADMIN), 404)
    assert_error(await client.delete("/api/tenants/ghost", headers=ADMIN), 404)


async def test_delete_removes_everything_the_tenant_owns(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    conversation = (
        await client.post(tenant.url("/conversations"), json={"title": "t"}, headers=tenant.headers)
    ).json()
    await client.post(other_tenant.url("/conversations"), json={}, headers=other_tenant.headers)
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO messages (message_id, tenant_id, conversation_id, seq, role, content)"
                " VALUES (gen_random_uuid(), 'acme', :c, 1, 'user', '[]')"
            ),
            {"c": conversation["conversation_id"]},
        )

    assert (await client.delete(tenant.url(), headers=ADMIN)).status_code == 204

    assert_error(await client.get(tenant.url(), headers=ADMIN), 404)
    assert_error(await client.get("/api/models", headers=tenant.headers), 401)
    async with app.state.engine.connect() as conn:
        for table in ("api_keys", "conversations", "messages"):
            left = await conn.scalar(text(f"SELECT count(*) FROM {table} WHERE tenant_id = 'acme'"))  # noqa: S608
            assert left == 0, table
        others = await conn.scalar(
            text("SELECT count(*) FROM conversations WHERE tenant_id = 'globex'")
        )
    assert others == 1
