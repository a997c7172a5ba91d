"""Tenant isolation: another tenant's key on every tenant-A route finds nothing and
changes nothing. The matrix must name every route under /api/tenants/{tenant_id}."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import TenantFixture, assert_error

TENANT_ROUTES_PREFIX = "/api/tenants/{tenant_id}"
# A body sent as a multipart upload of one file.
MULTIPART: dict[str, Any] = {"multipart": True}

MCP_SERVER: dict[str, Any] = {
    "name": "intruder",
    "type": "http",
    "config": {"url": "https://x.example/mcp"},
}
# (method, path template, body) for routes a tenant key may use inside its own tenant.
TENANT_SCOPED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/conversations", None),
    ("POST", "/conversations", {"title": "intruder"}),
    ("GET", "/conversations/{conversation_id}", None),
    ("PATCH", "/conversations/{conversation_id}", {"title": "hijacked"}),
    ("DELETE", "/conversations/{conversation_id}", None),
    ("POST", "/conversations/{conversation_id}/archive", None),
    ("GET", "/conversations/{conversation_id}/messages", None),
    ("POST", "/conversations/{conversation_id}/stream", {"user_input": "leak it"}),
    ("GET", "/runs/{run_id}", None),
    ("GET", "/runs/{run_id}/events", None),
    ("POST", "/runs/{run_id}/cancel", None),
    ("GET", "/conversations/{conversation_id}/files", None),
    ("POST", "/conversations/{conversation_id}/files", MULTIPART),
    ("GET", "/conversations/{conversation_id}/files/presented", None),
    ("PUT", "/conversations/{conversation_id}/files/{path}", {"x": "overwrite"}),
    ("GET", "/conversations/{conversation_id}/files/{path}", None),
    ("DELETE", "/conversations/{conversation_id}/files/{path}", None),
    ("GET", "/conversations/{conversation_id}/files/{path}/versions", None),
    ("GET", "/skills", None),
    ("POST", "/skills", {"files": {"SKILL.md": "---\nname: x\ndescription: y\n---\n"}}),
    ("GET", "/skills/{name}", None),
    ("PUT", "/skills/{name}", {"files": {"SKILL.md": "---\nname: x\ndescription: y\n---\n"}}),
    ("PATCH", "/skills/{name}", {"status": "disabled"}),
    ("DELETE", "/skills/{name}", None),
    ("GET", "/skills/{name}/versions", None),
    ("GET", "/skills/{name}/files/{path}", None),
    ("GET", "/slash-commands", None),
    ("GET", "/secrets", None),
    ("PUT", "/secrets/{secret_name}", {"value": "stolen"}),
    ("DELETE", "/secrets/{secret_name}", None),
    ("GET", "/mcp-servers", None),
    ("POST", "/mcp-servers", MCP_SERVER),
    ("GET", "/mcp-servers/builtin", None),
    ("GET", "/mcp-servers/{server_id}", None),
    ("PUT", "/mcp-servers/{server_id}", MCP_SERVER),
    ("DELETE", "/mcp-servers/{server_id}", None),
    ("POST", "/mcp-servers/{server_id}/test", {}),
    ("GET", "/usage", None),
    ("GET", "/usage/summary", None),
    ("GET", "/cost-report", None),
    ("GET", "/tool-logs", None),
    ("GET", "/budget", None),
]
# Admin-only routes: a tenant key gets 403 whatever the tenant, existing or not.
ADMIN_ONLY: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "", None),
    ("PUT", "", {"name": "hijacked"}),
    ("DELETE", "", None),
    ("GET", "/api-keys", None),
    ("POST", "/api-keys", {"name": "backdoor"}),
    ("DELETE", "/api-keys/{key_id}", None),
]


async def _request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> httpx.Response:
    if body is MULTIPART:
        files = [("files", ("intruder.txt", b"x"))]
        return await client.request(method, url, files=files, headers=headers)
    return await client.request(method, url, json=body, headers=headers)


async def _snapshot(app: FastAPI, tenant_id: str) -> dict[str, list[str]]:
    tables = (
        "tenants",
        "api_keys",
        "conversations",
        "conversation_counts",
        "messages",
        "runs",
        "run_events",
        "tool_calls",
        "usage_records",
        "workspace_files",
        "workspace_file_versions",
        "skills",
        "skill_versions",
        "tenant_secrets",
        "mcp_servers",
    )
    async with app.state.engine.connect() as conn:
        return {
            table: sorted(
                (
                    await conn.execute(
                        text(f"SELECT t::text FROM {table} t WHERE tenant_id = :t"),  # noqa: S608
                        {"t": tenant_id},
                    )
                ).scalars()
            )
            for table in tables
        }


async def _seed(client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture) -> dict[str, str]:
    conversation = await client.post(
        tenant.url("/conversations"), json={"title": "secret"}, headers=tenant.headers
    )
    cid = conversation.json()["conversation_id"]
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO messages (message_id, tenant_id, conversation_id, seq, role, content)"
                " VALUES (gen_random_uuid(), :t, :c, 1, 'user', '[]')"
            ),
            {"t": tenant.tenant_id, "c": cid},
        )
    async with app.state.engine.begin() as conn:
        run_id = await conn.scalar(
            text(
                "INSERT INTO runs (run_id, tenant_id, conversation_id, model_id, status, user_input,"
                " input_tokens, output_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens,"
                " cache_read_tokens, cost_usd, num_turns)"
                " VALUES (gen_random_uuid(), :t, :c, 'claude-sonnet-4-5', 'succeeded', 'secret',"
                " 1, 1, 0, 0, 0, 0.1, 1) RETURNING run_id"
            ),
            {"t": tenant.tenant_id, "c": cid},
        )
        await conn.execute(
            text(
                "INSERT INTO run_events (run_id, seq, tenant_id, type, data)"
                " VALUES (:r, 1, :t, 'done', '{}')"
            ),
            {"r": run_id, "t": tenant.tenant_id},
        )
    uploaded = await client.put(
        tenant.url(f"/conversations/{cid}/files/secret.txt"), content=b"s", headers=tenant.headers
    )
    assert uploaded.status_code == 200, uploaded.text
    skill = {
        "SKILL.md": "---\nname: secret-skill\ndescription: Ours\n---\nDo it",
        "secret.txt": "s",
    }
    created = await client.post(
        tenant.url("/skills"), json={"files": skill}, headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    secret = await client.put(
        tenant.url("/secrets/CRM"), json={"value": "s3cr3t"}, headers=tenant.headers
    )
    assert secret.status_code == 201, secret.text
    mcp = await client.post(
        tenant.url("/mcp-servers"), json={**MCP_SERVER, "name": "crm"}, headers=tenant.headers
    )
    assert mcp.status_code == 201, mcp.text
    return {
        "server_id": mcp.json()["server_id"],
        "secret_name": "CRM",
        "name": "secret-skill",
        "conversation_id": cid,
        "key_id": tenant.key_id,
        "run_id": str(run_id),
        "path": "secret.txt",
    }


async def test_matrix_names_every_tenant_route(app: FastAPI) -> None:
    routes = {
        (method.upper(), path.removeprefix(TENANT_ROUTES_PREFIX))
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(TENANT_ROUTES_PREFIX)
        for method in operations
    }
    covered = {(method, path) for method, path, _ in TENANT_SCOPED + ADMIN_ONLY}
    assert routes == covered


async def test_other_tenants_key_gets_404_and_changes_nothing(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    ids = await _seed(client, app, tenant)
    before = await _snapshot(app, tenant.tenant_id)
    assert all(
        before[t]
        for t in (
            "tenants",
            "api_keys",
            "conversations",
            "messages",
            "runs",
            "run_events",
            "workspace_files",
            "workspace_file_versions",
            "skills",
            "skill_versions",
            "tenant_secrets",
            "mcp_servers",
        )
    )

    for method, path, body in TENANT_SCOPED:
        url = tenant.url(path.format(**ids))
        response = await _request(client, method, url, body, other_tenant.headers)
        assert_error(response, 404, "NOT_FOUND")

    # Tenant B's own routes with tenant A's ids: also nothing.
    for method, path, body in TENANT_SCOPED:
        if not any(
            f"{{{key}}}" in path for key in ("conversation_id", "run_id", "name", "server_id")
        ):
            continue
        url = other_tenant.url(path.format(**ids))
        response = await _request(client, method, url, body, other_tenant.headers)
        assert_error(response, 404, "NOT_FOUND")

    for method, path, body in ADMIN_ONLY:
        for tenant_id in (tenant.tenant_id, "no-such-tenant"):
            url = f"/api/tenants/{tenant_id}{path.format(**ids)}"
            response = await _request(client, method, url, body, other_tenant.headers)
            assert_error(response, 403, "FORBIDDEN")

    assert await _snapshot(app, tenant.tenant_id) == before
    listed = await client.get(other_tenant.url("/conversations"), headers=other_tenant.headers)
    assert listed.json()["total"] == 0


async def test_404_looks_the_same_for_existing_and_missing_tenants(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    existing = await client.get(tenant.url("/conversations"), headers=other_tenant.headers)
    missing = await client.get(
        "/api/tenants/no-such-tenant/conversations", headers=other_tenant.headers
    )
    assert existing.status_code == missing.status_code == 404
    assert existing.json()["error"]["message"].replace("acme", "X") == missing.json()["error"][
        "message"
    ].replace("no-such-tenant", "X")
