"""The MCP servers API: configs checked (types, placeholders, URLs), the built-in
catalogue, the connection test, and 404 across tenants."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import TenantFixture, assert_error
from tests.integration.mcp_servers import crm


def server(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "crm",
        "type": "http",
        "config": {"url": "https://crm.example.com/mcp?key=${secrets.CRM}", "headers": {}},
    }
    return {**body, **overrides}


async def test_configs_are_checked_and_kept_as_written(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    url = tenant.url("/mcp-servers")
    created = await client.post(url, json=server(), headers=tenant.headers)
    assert created.status_code == 201, created.text
    row = created.json()
    assert row["config"]["url"].endswith("key=${secrets.CRM}")  # never a value
    assert_error(
        await client.post(url, json=server(), headers=tenant.headers), 409, "SERVER_EXISTS"
    )
    listed = await client.get(url, headers=tenant.headers)
    assert [s["name"] for s in listed.json()["items"]] == ["crm"]
    one = f"{url}/{row['server_id']}"
    replaced = await client.put(
        one, json=server(description="Tiers", status="disabled"), headers=tenant.headers
    )
    assert replaced.json()["status"] == "disabled" and replaced.json()["description"] == "Tiers"
    catalogue = await client.get(f"{url}/builtin", headers=tenant.headers)
    assert [b["name"] for b in catalogue.json()] == ["workspace", "web"]
    builtin = await client.post(
        url,
        json={"name": "files", "type": "builtin", "config": {"name": "workspace"}},
        headers=tenant.headers,
    )
    assert builtin.status_code == 201, builtin.text
    assert (await client.delete(one, headers=tenant.headers)).status_code == 204
    assert_error(await client.get(one, headers=tenant.headers), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (server(name="Bad_Name"), "VALIDATION_ERROR"),
        (server(name="a--" + "b" * 40), "VALIDATION_ERROR"),
        (server(type="stdio", config={"command": "npx"}), "COMMAND_NOT_ALLOWED"),
        (server(config={"url": "ftp://x/mcp"}), "VALIDATION_ERROR"),
        (server(config={"url": "https://${secrets.HOST}/mcp"}), "BAD_PLACEHOLDER"),
        (server(config={"url": "https://x/${request.path}"}), "BAD_PLACEHOLDER"),
        (
            server(config={"url": "https://x/mcp", "headers": {"A": "${env.HOME}"}}),
            "BAD_PLACEHOLDER",
        ),
        (
            server(config={"url": "https://x/mcp", "headers": {"A": "${secrets.}"}}),
            "BAD_PLACEHOLDER",
        ),
        (
            server(config={"url": "https://x/mcp", "headers": {"A": "a\r\nB: b"}}),
            "VALIDATION_ERROR",
        ),
        (server(config={"url": "https://x/mcp", "extra": 1}), "VALIDATION_ERROR"),
        (server(type="builtin", config={"name": "shell"}), "VALIDATION_ERROR"),
        (server(timeout_seconds=0), "VALIDATION_ERROR"),
        (server(type="openapi", config={"base_url": "https://x"}), "VALIDATION_ERROR"),
        (
            server(
                type="openapi",
                config={"base_url": "https://x", "spec": {}, "spec_url": "https://x/o"},
            ),
            "VALIDATION_ERROR",
        ),
        (
            server(
                type="openapi",
                config={"base_url": "https://${secrets.H}", "spec_url": "https://x/o"},
            ),
            "BAD_PLACEHOLDER",
        ),
        (
            server(type="openapi", config={"base_url": "https://x", "spec": {"nope": 1}}),
            "BAD_OPENAPI",
        ),
        (server(type="openapi", config={"base_url": "https://x", "spec": "- [a"}), "BAD_OPENAPI"),
        (
            server(type="openapi", config={"base_url": "https://x", "spec": "a: &x [1]\nb: *x"}),
            "BAD_OPENAPI",
        ),
        (
            server(
                type="openapi",
                config={
                    "base_url": "https://x",
                    "spec_url": "https://x/o",
                    "exclude": [{"path": "("}],
                },
            ),
            "BAD_OPENAPI",
        ),
        (
            server(type="stdio", config={"command": "/x", "env": {"LD_PRELOAD": "/w/x.so"}}),
            "VALIDATION_ERROR",
        ),
        (
            server(type="stdio", config={"command": "/x", "env": {"path": "/w"}}),
            "VALIDATION_ERROR",
        ),
    ],
)
async def test_bad_configs_are_422(
    client: httpx.AsyncClient, tenant: TenantFixture, body: dict[str, object], code: str
) -> None:
    response = await client.post(tenant.url("/mcp-servers"), json=body, headers=tenant.headers)
    assert_error(response, 422, code)


async def test_the_connection_test_uses_the_run_path(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    with crm("http") as (url, seen):
        body = server(
            config={"url": url, "headers": {"Authorization": "Bearer ${request.t}"}},
            allowed_tools=["lookup"],
        )
        created = await client.post(tenant.url("/mcp-servers"), json=body, headers=tenant.headers)
        test = tenant.url(f"/mcp-servers/{created.json()['server_id']}/test")
        missing = await client.post(test, json={}, headers=tenant.headers)
        assert_error(missing, 422, "UNRESOLVED_PLACEHOLDER")
        refused = await client.post(test, json={"tokens": {"t": "x"}}, headers=tenant.headers)
        assert_error(refused, 422, "MCP_CONNECT_FAILED")  # loopback, not on the allow-list
        assert seen.seen == []
        app.state.settings.outbound_allow_hosts = ["127.0.0.1"]
        tested = await client.post(test, json={"tokens": {"t": "tok"}}, headers=tenant.headers)
        assert tested.status_code == 200, tested.text
        assert [t["name"] for t in tested.json()] == ["lookup"]
        assert tested.json()[0]["input_schema"]["properties"]["customer"]["type"] == "string"
        assert any(h.get("authorization") == "Bearer tok" for h in seen.seen)


async def test_other_tenants_servers_are_404(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    created = await client.post(tenant.url("/mcp-servers"), json=server(), headers=tenant.headers)
    sid = created.json()["server_id"]
    for method, path, body in [
        ("GET", f"/mcp-servers/{sid}", None),
        ("PUT", f"/mcp-servers/{sid}", server()),
        ("DELETE", f"/mcp-servers/{sid}", None),
        ("POST", f"/mcp-servers/{sid}/test", {}),
    ]:
        for url in (tenant.url(path), other_tenant.url(path)):
            response = await client.request(method, url, json=body, headers=other_tenant.headers)
            assert_error(response, 404, "NOT_FOUND")
    listed = await client.get(other_tenant.url("/mcp-servers"), headers=other_tenant.headers)
    assert listed.json()["total"] == 0


async def test_an_openapi_document_is_not_read_for_placeholders(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    """`${TOKEN}` in a document (a curl example, say) is text: saving and planning a run
    do not take it for a placeholder."""
    spec = {
        "openapi": "3.0.0",
        "info": {"title": "t", "version": "1", "description": "curl -H 'X: ${TOKEN}'"},
        "paths": {
            "/a": {"get": {"operationId": "get_a", "responses": {"200": {"description": "ok"}}}}
        },
    }
    body = server(type="openapi", config={"base_url": "http://127.0.0.1:9", "spec": spec})
    created = await client.post(tenant.url("/mcp-servers"), json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    test = await client.post(
        tenant.url(f"/mcp-servers/{created.json()['server_id']}/test"),
        json={},
        headers=tenant.headers,
    )
    assert test.status_code == 200, test.text  # the document needs no connection to list
    assert [t["name"] for t in test.json()] == ["get_a"]
