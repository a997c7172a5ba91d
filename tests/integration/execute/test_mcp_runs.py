"""Tenant MCP servers in runs, through the real SDK, CLI and jail: the service connects
to the server (credentials substituted here, address checked and pinned), the agent gets
an in-process proxy of the allowed tools, and no credential reaches the CLI, the model
or the stored records."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from tests.conftest import TenantFixture, assert_error, create_tenant
from tests.integration.execute.streams import (
    GROUPED,
    agent_pids,
    hostile,
    new_conversation,
    ok,
    report,
    running_service,
    stream_turn,
)
from tests.integration.live_server import serve
from tests.integration.mcp_servers import crm, shop_app

SECRET = "sk-crm-secret-1234567890"
TOKEN = "utok-end-user-987654321"


@pytest.fixture
def wire() -> str:
    return "anthropic"


async def _add_server(
    client: httpx.AsyncClient, tenant: TenantFixture, url: str, kind: str = "http", **extra: Any
) -> dict[str, Any]:
    await client.put(
        tenant.url("/secrets/CRM_TOKEN"), json={"value": SECRET}, headers=tenant.headers
    )
    body = {
        "name": "crm",
        "type": kind,
        "config": {
            "url": url,
            "headers": {
                "Authorization": "Bearer ${secrets.CRM_TOKEN}",
                "X-User": "${request.user_token}",
            },
        },
        "allowed_tools": ["lookup", "who*"],
        "description": "ACME-CRM: customer tiers.",
        **extra,
    }
    response = await client.post(tenant.url("/mcp-servers"), json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
async def service(
    database_url: URL, tmp_path: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # Loopback is reached only because the operator allows it here.
    async with running_service(database_url, tmp_path, outbound_allow_hosts=["127.0.0.1"]) as pair:
        yield pair


CALLS = [
    ["mcp__crm__lookup", {"customer": "acme"}],
    ["mcp__crm__whoami", {}],
    ["mcp__crm__hidden_tool", {}],
]


async def test_an_http_server_through_the_proxy(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = service
    tenant = await create_tenant(client, "acme")
    with crm("http") as (url, headers_seen):
        await _add_server(client, tenant, url)
        cid = await new_conversation(client, tenant)
        app.state.offline_model.requests.clear()
        stream = await stream_turn(
            client, tenant, cid, hostile(*CALLS), tokens={"user_token": TOKEN}
        )
        entries = report(stream)
        assert ok(entries[0]) and "acme: gold" in entries[0], entries
        # The leaky server echoed the credentials: the agent sees them redacted.
        assert ok(entries[1]) and "[redacted]" in entries[1] and SECRET not in entries[1]
        assert not ok(entries[2])  # not among the allowed tools
        # The server got the credentials, substituted by the service.
        assert any(h.get("authorization") == f"Bearer {SECRET}" for h in headers_seen.seen)
        assert any(h.get("x-user") == TOKEN for h in headers_seen.seen)
        # The CLI process holds none of them: not in its environment nor its argv.
        for pid in agent_pids(app.state.settings.data_dir, tenant, cid):
            process = psutil.Process(pid)
            held = json.dumps([process.cmdline(), process.environ()])
            assert SECRET not in held and TOKEN not in held

    sent = json.dumps(list(app.state.offline_model.requests))
    assert SECRET not in sent and TOKEN not in sent
    assert "ACME-CRM: customer tiers." in sent  # the description reached the system prompt
    tools = {
        t["name"] for r in app.state.offline_model.requests for t in r["body"].get("tools", [])
    }
    assert {
        "mcp__crm__lookup",
        "mcp__crm__whoami",
    } <= tools and "mcp__crm__hidden_tool" not in tools
    async with app.state.engine.connect() as conn:
        calls = (
            await conn.execute(text("SELECT name, mcp_server FROM tool_calls ORDER BY started_at"))
        ).all()
        stored = json.dumps(
            [
                [str(v) for v in row]
                for table in ("messages", "run_events", "tool_calls", "sdk_session_entries", "runs")
                for row in (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608
            ]
        )
    assert ("mcp__crm__lookup", "crm") in [tuple(c) for c in calls]
    assert SECRET not in stored and TOKEN not in stored


async def test_an_sse_server(service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = service
    tenant = await create_tenant(client, "acme")
    with crm("sse") as (url, _):
        await _add_server(client, tenant, url, kind="sse")
        cid = await new_conversation(client, tenant)
        stream = await stream_turn(
            client, tenant, cid, hostile(CALLS[0]), tokens={"user_token": TOKEN}
        )
        # The warm agent process holds the SSE stream open: end it before the server stops.
        await client.delete(tenant.url(f"/conversations/{cid}"), headers=tenant.headers)
        await app.state.executor.ctx.warm.closed()
    (entry,) = report(stream)
    assert ok(entry) and "acme: gold" in entry


async def test_loopback_is_refused_without_the_allow_list(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    """The default service (no allow-list): the server on loopback is never contacted;
    the run goes on without it, and says so."""
    with crm("http") as (url, headers_seen):
        await _add_server(client, tenant, url)
        cid = await new_conversation(client, tenant)
        stream = await stream_turn(
            client, tenant, cid, hostile(CALLS[0]), tokens={"user_token": TOKEN}
        )
        assert headers_seen.seen == []
    (note,) = [e for e in stream.of("progress") if e.get("type") == "mcp_unavailable"]
    assert note["server"] == "crm" and "not allowed" in note["message"]
    assert not ok(report(stream)[0])
    assert stream.done["status"] == "success"


async def test_an_unresolved_placeholder_is_422_before_any_run(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await _add_server(client, tenant, "http://127.0.0.1:9/mcp")
    cid = await new_conversation(client, tenant)
    refused = await stream_turn(client, tenant, cid, "hello")  # no user_token
    assert refused.status_code == 422
    error = refused.events[0][1]["error"]
    assert error["code"] == "UNRESOLVED_PLACEHOLDER" and "crm" in error["message"]
    assert "${request.user_token}" in error["message"]
    async with app.state.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM runs")) == 0
    # Narrowed away, the server needs nothing: the run goes.
    narrowed = await stream_turn(client, tenant, cid, "hello", mcp_servers=[])
    assert narrowed.done["status"] == "success"
    unknown = await stream_turn(client, tenant, cid, "hello", mcp_servers=["nope"])
    assert (
        unknown.status_code == 422 and unknown.events[0][1]["error"]["code"] == "UNKNOWN_MCP_SERVER"
    )
    assert_error(
        await client.get(
            tenant.url("/mcp-servers/00000000-0000-0000-0000-000000000000"), headers=tenant.headers
        ),
        404,
        "NOT_FOUND",
    )


def _site() -> Starlette:
    async def page(_: Request) -> PlainTextResponse:
        return PlainTextResponse("HELLO-FROM-THE-PAGE")

    async def to_private(_: Request) -> RedirectResponse:
        return RedirectResponse("http://10.0.0.1/secret", status_code=302)

    async def to_metadata(_: Request) -> RedirectResponse:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    return Starlette(
        routes=[
            Route("/page", page),
            Route("/to-private", to_private),
            Route("/to-metadata", to_metadata),
        ]
    )


async def test_the_builtin_web_fetch_goes_through_the_guard(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = service
    tenant = await create_tenant(client, "acme")
    body = {"name": "web", "type": "builtin", "config": {"name": "web"}}
    created = await client.post(tenant.url("/mcp-servers"), json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    with serve(_site()) as base:  # type: ignore[arg-type]
        cid = await new_conversation(client, tenant)
        stream = await stream_turn(
            client,
            tenant,
            cid,
            hostile(
                ["mcp__web__fetch", {"url": f"{base}/page"}],
                ["mcp__web__fetch", {"url": f"{base}/to-private"}],
                ["mcp__web__fetch", {"url": f"{base}/to-metadata"}],
                ["mcp__web__fetch", {"url": "http://[::ffff:169.254.169.254]/"}],
                ["mcp__web__fetch", {"url": "file:///etc/passwd"}],
                ["mcp__web__fetch", {"url": "http://2130706434:5432/"}],  # 127.0.0.2
            ),
        )
    entries = report(stream)
    assert "HELLO-FROM-THE-PAGE" in entries[0], entries
    for entry in entries[1:]:
        assert "not allowed" in entry or "only follows http" in entry, entry


async def test_an_openapi_api_as_tools(service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = service
    tenant = await create_tenant(client, "acme")
    await client.put(
        tenant.url("/secrets/SHOP_KEY"), json={"value": SECRET}, headers=tenant.headers
    )
    shop, seen = shop_app()
    with serve(shop) as base:
        body = {
            "name": "shop",
            "type": "openapi",
            "config": {
                "spec_url": f"{base}/openapi.json",
                "base_url": base,
                "headers": {"X-API-Key": "${secrets.SHOP_KEY}"},
                "exclude": [{"methods": ["DELETE"]}],
            },
        }
        created = await client.post(tenant.url("/mcp-servers"), json=body, headers=tenant.headers)
        assert created.status_code == 201, created.text
        cid = await new_conversation(client, tenant)
        stream = await stream_turn(
            client,
            tenant,
            cid,
            hostile(
                ["mcp__shop__get_customer", {"customer_id": "acme"}],
                ["mcp__shop__create_order", {"item": "pen", "qty": 3}],
                ["mcp__shop__whoami", {}],
                ["mcp__shop__delete_customer", {"customer_id": "acme"}],
                ["mcp__shop__big", {}],
            ),
        )
    entries = report(stream)
    assert ok(entries[0]) and "gold" in entries[0], (entries, stream.of("progress"))
    assert ok(entries[1]) and '"qty":3' in entries[1].replace(" ", ""), entries[1]
    assert "[redacted]" in entries[2] and SECRET not in entries[2]
    assert not ok(entries[3])  # excluded by method
    assert any(h.get("x-api-key") == SECRET for h in seen)
    # The big answer reached the model cut, and saying so.
    sent = json.dumps(list(app.state.offline_model.requests))
    assert "the result was longer than 40000 characters" in sent and SECRET not in sent


async def test_the_agent_uses_the_services_own_api_with_the_users_key(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The service's own OpenAPI document as a tenant's server: the agent lists the
    user's conversations with the key the front end passed as a request token."""
    _, client = service
    tenant = await create_tenant(client, "acme")
    base = str(client.base_url).rstrip("/")
    body = {
        "name": "self",
        "type": "openapi",
        "config": {
            "spec_url": f"{base}/openapi.json",
            "base_url": base,
            "headers": {"X-API-Key": "${request.api_key}"},
        },
        "allowed_tools": ["conversations_list_conversations"],
    }
    created = await client.post(tenant.url("/mcp-servers"), json=body, headers=tenant.headers)
    assert created.status_code == 201, created.text
    cid = await new_conversation(client, tenant, title="Planning Q3")
    stream = await stream_turn(
        client,
        tenant,
        cid,
        hostile(["mcp__self__conversations_list_conversations", {"tenant_id": "acme"}]),
        tokens={"api_key": tenant.headers["X-API-Key"]},
    )
    (entry,) = report(stream)
    assert ok(entry) and "Planning Q3" in entry, entry
    assert tenant.headers["X-API-Key"] not in entry


STDIO_SERVER = Path(__file__).resolve().parents[1] / "stdio_server.py"


async def test_a_stdio_server_runs_in_a_jail_of_its_own(database_url: URL, tmp_path: Path) -> None:
    python = Path(sys.executable)
    interpreter = await asyncio.to_thread(python.resolve)
    allowed = {
        "command": str(python),
        "args_prefix": [str(STDIO_SERVER)],
        # What the server needs to run: its interpreter, the venv, its own file.
        "read_only": [str(interpreter.parents[1]), sys.prefix, str(STDIO_SERVER.parent)],
    }
    settings = {"mcp_stdio_commands": [allowed], "agent_nice": 10}
    async with running_service(database_url, tmp_path, **settings) as (app, client):
        tenant = await create_tenant(client, "acme")
        await client.put(
            tenant.url("/secrets/CRM_TOKEN"), json={"value": SECRET}, headers=tenant.headers
        )
        body = {
            "name": "local",
            "type": "stdio",
            "config": {
                "command": str(python),
                "args": [str(STDIO_SERVER)],
                "env": {"CRM_KEY": "${secrets.CRM_TOKEN}"},
            },
        }
        created = await client.post(tenant.url("/mcp-servers"), json=body, headers=tenant.headers)
        assert created.status_code == 201, created.text
        for bad, code in [
            ({**body["config"], "command": "/bin/sh", "args": ["-c", "id"]}, "COMMAND_NOT_ALLOWED"),
            (
                {**body["config"], "args": [str(STDIO_SERVER), "${secrets.CRM_TOKEN}"]},
                "BAD_PLACEHOLDER",
            ),
        ]:
            refused = await client.post(
                tenant.url("/mcp-servers"),
                json={**body, "name": "bad", "config": bad},
                headers=tenant.headers,
            )
            assert_error(refused, 422, code)
        cid = await new_conversation(client, tenant)
        data_dir = app.state.settings.data_dir.resolve()
        stream = await stream_turn(
            client,
            tenant,
            cid,
            hostile(
                ["mcp__local__env_digest", {"name": "CRM_KEY"}],
                ["mcp__local__read", {"path": str(data_dir / "admin_api_key")}],
                ["mcp__local__read", {"path": str(data_dir / "workspaces" / "acme" / cid / "x")}],
                ["mcp__local__read", {"path": "/proc/1/environ"}],
                ["mcp__local__connect", {"host": "127.0.0.1", "port": 5432}],
                ["mcp__local__read", {"path": "/proc/self/stat"}],
                ["mcp__local__read", {"path": "/proc/self/autogroup"}],
            ),
        )
    entries = report(stream)
    # It runs AGENT_NICE (10) below the service, and so does its scheduling group where
    # the kernel groups sessions (the MCP client makes each server a session).
    stat = entries[5].split(": ", 1)[1]
    assert int(stat.rsplit(")", 1)[1].split()[16]) == psutil.Process().nice() + 10, stat
    if GROUPED:
        assert entries[6].endswith(" nice 10"), entries[6]
    assert hashlib.sha256(SECRET.encode()).hexdigest() in entries[0], entries
    assert all("cannot read" in e for e in entries[1:3]), entries
    assert "cannot connect" in entries[4], entries
    assert SECRET not in json.dumps(entries)
