"""The models catalog: read by any key, changed by admins, prices as decimal strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from tests.conftest import ADMIN, TenantFixture, assert_error

NEW_MODEL: dict[str, Any] = {
    "model_id": "claude-test-1",
    "display_name": "Claude Test",
    "bedrock_model_id": "us.anthropic.claude-test-1-v1:0",
    "anthropic_model_id": "claude-test-1-20260101",
    "price_input": "3",
    "price_output": "15.000001",
    "price_cache_write_5m": "3.75",
    "price_cache_write_1h": "6",
    "price_cache_read": "0.3",
    "context_window": 200000,
}


async def test_seeded_catalog(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    response = await client.get("/api/models", headers=tenant.headers)
    assert response.status_code == 200
    models = {m["model_id"]: m for m in response.json()["items"]}
    families = {name.split("-")[1] for name in models if name.startswith("claude-")}
    assert {"opus", "sonnet", "haiku"} <= families | {
        m.split("-")[3] for m in models if m.startswith("claude-3")
    }
    sonnet = models["claude-sonnet-4-5"]
    assert sonnet["price_input"] == "3.000000"
    assert sonnet["price_output"] == "15.000000"
    assert sonnet["price_cache_write_5m"] == "3.750000"
    assert sonnet["price_cache_write_1h"] == "6.000000"
    assert sonnet["price_cache_read"] == "0.300000"
    assert sonnet["bedrock_model_id"].startswith("us.anthropic.claude-sonnet-4-5")
    assert sonnet["context_window"] == 200000
    assert models["claude-opus-4-5"]["price_input"] == "5.000000"
    assert models["claude-haiku-4-5"]["price_output"] == "5.000000"
    for model in models.values():
        for field in ("price_input", "price_output", "price_cache_read"):
            assert isinstance(model[field], str)


async def test_filter_by_status(client: httpx.AsyncClient) -> None:
    deprecated = (await client.get("/api/models?status=deprecated", headers=ADMIN)).json()
    assert [m["model_id"] for m in deprecated["items"]] == ["claude-3-5-haiku"]


async def test_get_one_and_missing(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    got = await client.get("/api/models/claude-haiku-4-5", headers=tenant.headers)
    assert got.json()["display_name"] == "Claude Haiku 4.5"
    assert_error(await client.get("/api/models/gpt-5", headers=tenant.headers), 404, "NOT_FOUND")


async def test_admin_creates_updates_and_deletes(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/models", json=NEW_MODEL, headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "active"
    assert Decimal(body["price_output"]) == Decimal("15.000001")
    assert_error(
        await client.post("/api/models", json=NEW_MODEL, headers=ADMIN), 409, "MODEL_EXISTS"
    )

    updated = await client.put(
        "/api/models/claude-test-1",
        json={"price_input": "2.5", "display_name": "Renamed"},
        headers=ADMIN,
    )
    assert updated.status_code == 200
    assert updated.json()["price_input"] == "2.500000"
    assert updated.json()["price_output"] == "15.000001"
    assert updated.json()["display_name"] == "Renamed"

    status = await client.patch(
        "/api/models/claude-test-1/status", json={"status": "deprecated"}, headers=ADMIN
    )
    assert status.json()["status"] == "deprecated"
    assert (await client.delete("/api/models/claude-test-1", headers=ADMIN)).status_code == 204
    assert_error(await client.get("/api/models/claude-test-1", headers=ADMIN), 404)


async def test_prices_are_validated(client: httpx.AsyncClient) -> None:
    for field, value in (
        ("price_input", "-1"),
        ("price_input", "abc"),
        ("price_input", "1.0000001"),
        ("price_input", "Infinity"),
        ("price_output", "NaN"),
        ("context_window", 0),
        ("model_id", "has space"),
        ("status", "retired"),
    ):
        response = await client.post("/api/models", json={**NEW_MODEL, field: value}, headers=ADMIN)
        assert_error(response, 422, "VALIDATION_ERROR")
    incomplete = {k: v for k, v in NEW_MODEL.items() if k != "price_cache_read"}
    assert_error(await client.post("/api/models", json=incomplete, headers=ADMIN), 422)
    assert_error(
        await client.put("/api/models/claude-sonnet-4", json={"price_input": None}, headers=ADMIN),
        422,
    )
    assert_error(await client.get("/api/models/claude-test-1", headers=ADMIN), 404)


async def test_delete_is_refused_while_in_use(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    # The tenant's default model.
    assert_error(
        await client.delete("/api/models/claude-sonnet-4-5", headers=ADMIN), 409, "MODEL_IN_USE"
    )
    # A model only a conversation uses.
    conversation = await client.post(
        tenant.url("/conversations"), json={"model_id": "claude-opus-4-5"}, headers=tenant.headers
    )
    assert conversation.status_code == 201
    assert_error(
        await client.delete("/api/models/claude-opus-4-5", headers=ADMIN), 409, "MODEL_IN_USE"
    )
    # Deprecating stays possible, and the model stays readable.
    deprecate = await client.patch(
        "/api/models/claude-opus-4-5/status", json={"status": "deprecated"}, headers=ADMIN
    )
    assert deprecate.status_code == 200
    assert (await client.get("/api/models/claude-opus-4-5", headers=ADMIN)).status_code == 200
    # Unused models can go.
    assert (await client.delete("/api/models/claude-haiku-4-5", headers=ADMIN)).status_code == 204


async def test_missing_model_writes_are_404(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.put("/api/models/ghost", json={"display_name": "x"}, headers=ADMIN), 404
    )
    assert_error(
        await client.patch("/api/models/ghost/status", json={"status": "active"}, headers=ADMIN),
        404,
    )
    assert_error(await client.delete("/api/models/ghost", headers=ADMIN), 404)
