"""Bad bodies on every write route: 422 in the envelope, and nothing written."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import ADMIN, TenantFixture, assert_error

WRITE_ROUTES = [
    ("POST", "/api/tenants"),
    ("PUT", "/api/tenants/acme"),
    ("POST", "/api/tenants/acme/api-keys"),
    ("POST", "/api/models"),
    ("PUT", "/api/models/claude-sonnet-4-5"),
    ("PATCH", "/api/models/claude-sonnet-4-5/status"),
    ("POST", "/api/tenants/acme/conversations"),
    ("PATCH", "/api/tenants/acme/conversations/{cid}"),
]
BAD_BODIES = [
    pytest.param(b"{not json", id="malformed"),
    pytest.param(b"[1, 2, 3]", id="array"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b'{"unexpected_field": 1}', id="unknown-field"),
    pytest.param(b'{"name": 12, "status": 3, "title": 4, "model_id": 5}', id="wrong-types"),
]


async def _state(app: FastAPI) -> str:
    async with app.state.engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    text(
                        "SELECT (SELECT json_agg(t ORDER BY tenant_id) FROM tenants t)::text"
                        " || (SELECT json_agg(k ORDER BY id) FROM api_keys k)::text"
                        " || (SELECT json_agg(m ORDER BY model_id) FROM models m)::text"
                        " || (SELECT json_agg(c ORDER BY conversation_id) FROM conversations c)::text"
                    )
                )
            ).scalar()
        )


@pytest.mark.parametrize("payload", BAD_BODIES)
async def test_bad_bodies_are_422_and_write_nothing(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, payload: bytes
) -> None:
    conversation = await client.post(tenant.url("/conversations"), json={}, headers=tenant.headers)
    cid = conversation.json()["conversation_id"]
    before = await _state(app)
    for method, path in WRITE_ROUTES:
        response = await client.request(
            method,
            path.format(cid=cid),
            content=payload,
            headers={**ADMIN, "Content-Type": "application/json"},
        )
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert error["details"], (method, path)
        assert all({"loc", "msg", "type"} <= set(d) for d in error["details"])
    assert await _state(app) == before


async def test_empty_body_where_one_is_required(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    for path in ("/api/tenants", "/api/models", tenant.url("/api-keys")):
        assert_error(await client.post(path, headers=ADMIN), 422, "VALIDATION_ERROR")


async def test_huge_numbers_are_422_not_500(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    for query in (
        "limit=99999999999999999999999",
        "offset=99999999999999999999999",
        "offset=10000001",
    ):
        assert_error(
            await client.get(tenant.url(f"/conversations?{query}"), headers=tenant.headers), 422
        )
    body = {"settings": {"max_turns": 10**30}}
    assert_error(await client.put(tenant.url(), json=body, headers=ADMIN), 422)


async def test_values_postgres_cannot_store_are_422(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    """JSON that Python parses but PostgreSQL refuses: NaN, Infinity, lone surrogates."""
    conversations = tenant.url("/conversations")
    cases = [
        ("POST", conversations, b'{"metadata": {"x": NaN}}'),
        ("POST", conversations, b'{"metadata": {"x": [Infinity]}}'),
        ("POST", conversations, b'{"metadata": {"x": 1e999}}'),
        ("POST", conversations, b'{"metadata": {"\\ud800": 1}}'),
        ("POST", conversations, b'{"metadata": {"x": 249619245715340105384034566144}}'),
        ("POST", conversations, b'{"metadata": {"x": [-9223372036854775809]}}'),
        ("POST", conversations, b'{"user_id": "\\ud800"}'),
        ("POST", conversations, b'{"title": "a\\udfff"}'),
        ("PUT", tenant.url(), b'{"system_prompt": "\\ud800"}'),
        ("PUT", "/api/models/claude-sonnet-4", b'{"bedrock_model_id": "\\ud800"}'),
    ]
    for method, path, payload in cases:
        response = await client.request(
            method, path, content=payload, headers={**ADMIN, "Content-Type": "application/json"}
        )
        assert_error(response, 422, "VALIDATION_ERROR")
    assert (await client.get(conversations, headers=tenant.headers)).json()["total"] == 0


async def test_the_document_says_null_only_where_null_is_taken(client: httpx.AsyncClient) -> None:
    """A patch's field that refuses null is not documented as nullable (and one that
    takes it is)."""
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    update = schemas["ConversationUpdate"]["properties"]
    assert "anyOf" not in update["model_id"] and update["model_id"]["type"] == "string"
    assert {"type": "null"} in update["title"]["anyOf"]


@pytest.mark.parametrize("value", ["0.5", "1700000000", "2026-03-01", "2026-03-01T00:00:00"])
async def test_date_times_are_rfc_3339_only(
    client: httpx.AsyncClient, tenant: TenantFixture, value: str
) -> None:
    """Not a number taken as a Unix time, not a date alone, not without an offset."""
    for path, name in (("/conversations", "created_before"), ("/usage", "from")):
        response = await client.get(tenant.url(path), params={name: value}, headers=tenant.headers)
        assert_error(response, 422)
    fine = await client.get(
        tenant.url("/conversations"),
        params={"created_before": "2026-03-01T00:00:00.5+01:00"},
        headers=tenant.headers,
    )
    assert fine.status_code == 200, fine.text


async def test_a_body_that_is_not_utf8_is_422(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    response = await client.post(
        tenant.url("/conversations"),
        content=b'{"title": "\xff\xfe"}',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_the_document_carries_the_rules_the_server_enforces(
    client: httpx.AsyncClient,
) -> None:
    """Patterns and lengths reach the schema (a NUL check placed before them hid them)."""
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert schemas["ModelCreate"]["properties"]["model_id"]["pattern"].startswith("^[A-Za-z0-9]")
    assert schemas["TenantCreate"]["properties"]["name"]["maxLength"] == 200


@pytest.mark.parametrize(
    "body", [b"{not json", b'{"title": "\xff\xfe"}'], ids=["malformed", "not-utf8"]
)
async def test_the_key_is_checked_before_the_body(
    client: httpx.AsyncClient, tenant: TenantFixture, body: bytes
) -> None:
    """A body that cannot be read says 401 to a caller with no key or a wrong one (FastAPI
    reads the body before any dependency), and 422 only to one with a valid key."""
    json = {"Content-Type": "application/json"}
    url = tenant.url("/conversations")
    for headers in ({}, {"X-API-Key": "cmab_not-a-key"}, {"Authorization": "Bearer nope"}):
        response = await client.post(url, content=body, headers={**json, **headers})
        assert_error(response, 401, "UNAUTHORIZED")
    assert_error(await client.post(url, content=body, headers={**json, **tenant.headers}), 422)


async def test_unknown_query_parameters_are_422(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    """A misspelt parameter is refused, not ignored (it would answer another question)."""
    response = await client.get(
        tenant.url("/conversations"), params={"limt": "5"}, headers=tenant.headers
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"] == [
        {"loc": ["query", "limt"], "msg": "Unknown query parameter", "type": "extra_forbidden"}
    ]
    fine = await client.get(
        tenant.url("/conversations"), params={"limit": "5"}, headers=tenant.headers
    )
    assert fine.status_code == 200, fine.text
    # The key first; and health checks may add what they like (a cache buster, say).
    assert_error(await client.get(tenant.url("/conversations"), params={"limt": "5"}), 401)
    assert (await client.get("/health", params={"nocache": "1"})).status_code == 200


async def test_paths_named_by_a_sibling_route_answer_405_with_its_methods(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    """`files/presented`, `files/…/versions` and `mcp-servers/builtin` are lists: writing
    to them is a 405 that names what they take, not a file write or a 422."""
    cid = (await client.post(tenant.url("/conversations"), json={}, headers=tenant.headers)).json()[
        "conversation_id"
    ]
    for method, path in (
        ("PUT", f"/conversations/{cid}/files/presented"),
        ("DELETE", f"/conversations/{cid}/files/presented"),
        ("PUT", f"/conversations/{cid}/files/notes.md/versions"),
        ("PUT", "/mcp-servers/builtin"),
    ):
        response = await client.request(method, tenant.url(path), headers=tenant.headers)
        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert response.headers["allow"] == "GET", (method, path)
    # Nor can an upload make a file only those lists would name.
    for name in ("presented", "notes/versions"):
        upload = await client.post(
            tenant.url(f"/conversations/{cid}/files"),
            files={"files": ("x.txt", b"x")},
            data={"paths": name},
            headers=tenant.headers,
        )
        assert_error(upload, 422, "BAD_PATH")
    listing = await client.get(tenant.url(f"/conversations/{cid}/files"), headers=tenant.headers)
    assert listing.json()["items"] == []
    collection = await client.options(tenant.url("/conversations"), headers=tenant.headers)
    assert collection.headers["allow"] == "GET, POST"


async def test_money_is_a_decimal_string(client: httpx.AsyncClient) -> None:
    """Prices and budgets: text with at most 6 (2) decimals, never a JSON number, which
    cannot carry an exact amount; the document shows the pattern the server checks."""
    for value in (3, 3.5, "1e3", "-1", "1.0000001", " 3", "3\n"):
        response = await client.put(
            "/api/models/claude-sonnet-4-5", json={"price_input": value}, headers=ADMIN
        )
        assert_error(response, 422, "VALIDATION_ERROR")
    budget = await client.post(
        "/api/tenants",
        json={"tenant_id": "cash", "name": "Cash", "settings": {"monthly_budget_usd": "10.123"}},
        headers=ADMIN,
    )
    assert_error(budget, 422, "VALIDATION_ERROR")
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    price = schemas["ModelCreate"]["properties"]["price_input"]
    assert price["type"] == "string" and price["pattern"].startswith("^(?:[0-9]{1,6}")


async def test_the_document_lists_every_error_an_operation_can_answer(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/api/tenants/{tenant_id}"]["put"]
    assert {"401", "403", "404", "413", "422", "431", "500", "503"} <= set(operation["responses"])
    envelope = operation["responses"]["431"]["content"]["application/json"]["schema"]
    assert envelope == {"$ref": "#/components/schemas/ErrorEnvelope"}
    events = document["paths"]["/api/tenants/{tenant_id}/runs/{run_id}/events"]["get"]
    header = next(p for p in events["parameters"] if p["name"] == "Last-Event-ID")
    assert header["schema"]["pattern"] == "^(?:[0-9]{1,7}|10000000)?$"  # no null branch
