"""Tenant secrets: write-only, encrypted at rest with rotating keys, never shown."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.services.secrets import Vault, read_secrets
from tests.conftest import TenantFixture, assert_error

VALUE = "sk-live-very-secret-1234567890"


async def test_secrets_are_write_only_and_encrypted(
    client: httpx.AsyncClient,
    app: FastAPI,
    tenant: TenantFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = tenant.url("/secrets/CRM_TOKEN")
    created = await client.put(url, json={"value": VALUE}, headers=tenant.headers)
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"name", "created_at", "updated_at"}
    replaced = await client.put(url, json={"value": VALUE + "2"}, headers=tenant.headers)
    assert replaced.status_code == 200
    listed = await client.get(tenant.url("/secrets"), headers=tenant.headers)
    assert [s["name"] for s in listed.json()["items"]] == ["CRM_TOKEN"]
    assert VALUE not in listed.text and VALUE not in created.text + replaced.text
    async with app.state.engine.connect() as conn:
        stored = await conn.scalar(text("SELECT ciphertext FROM tenant_secrets"))
    assert VALUE.encode() not in bytes(stored)
    async with app.state.sessionmaker() as session:
        values = await read_secrets(session, app.state.vault, tenant.tenant_id, ["CRM_TOKEN"])
    assert values == {"CRM_TOKEN": VALUE + "2"}
    assert VALUE not in capsys.readouterr().out  # nor in the logs

    for bad in ("1abc", "has-dash", "x" * 65):
        assert_error(
            await client.put(
                tenant.url(f"/secrets/{bad}"), json={"value": "v"}, headers=tenant.headers
            ),
            422,
        )
    assert_error(await client.put(url, json={"value": ""}, headers=tenant.headers), 422)
    assert (await client.delete(url, headers=tenant.headers)).status_code == 204
    assert_error(await client.delete(url, headers=tenant.headers), 404, "NOT_FOUND")


async def test_other_tenants_secrets_are_404(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    await client.put(
        tenant.url("/secrets/CRM_TOKEN"), json={"value": VALUE}, headers=tenant.headers
    )
    for method in ("GET", "PUT", "DELETE"):
        path = "/secrets" if method == "GET" else "/secrets/CRM_TOKEN"
        body = {"value": "x"} if method == "PUT" else None
        response = await client.request(
            method, tenant.url(path), json=body, headers=other_tenant.headers
        )
        assert_error(response, 404, "NOT_FOUND")
    mine = await client.delete(other_tenant.url("/secrets/CRM_TOKEN"), headers=other_tenant.headers)
    assert_error(mine, 404, "NOT_FOUND")


def test_keys_rotate() -> None:
    old = Vault(["old-key-" + "x" * 32])
    token = old.encrypt(VALUE)
    rotated = Vault(["new-key-" + "y" * 32, "old-key-" + "x" * 32])
    assert rotated.decrypt(token) == VALUE  # old values still read
    assert Vault(["new-key-" + "y" * 32]).decrypt(rotated.rotate(token)) == VALUE
