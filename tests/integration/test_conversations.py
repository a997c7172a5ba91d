"""Conversations: create, list, read, change, archive, delete, and the message log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import ADMIN, TenantFixture, assert_error


async def _create(
    client: httpx.AsyncClient,
    tenant: TenantFixture,
    body: dict[str, Any] | None = None,
    **headers: str,
) -> dict[str, Any]:
    response = await client.post(
        tenant.url("/conversations"), json=body or {}, headers={**tenant.headers, **headers}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_defaults(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    conversation = await _create(client, tenant, **{"X-User-ID": "user-1"})
    assert conversation["tenant_id"] == "acme"
    assert conversation["user_id"] == "user-1"
    assert conversation["model_id"] == "claude-sonnet-4-5"
    assert conversation["title"] is None
    assert conversation["status"] == "active"
    assert conversation["metadata"] == {}
    assert conversation["archived_at"] is None
    assert len(conversation["conversation_id"]) == 36


async def test_create_with_body(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    body = {
        "title": "  Plan the trip  ",
        "model_id": "claude-haiku-4-5",
        "user_id": "u2",
        "metadata": {"k": [1, {"x": None}]},
    }
    conversation = await _create(client, tenant, body)
    assert conversation["title"] == "Plan the trip"
    assert conversation["model_id"] == "claude-haiku-4-5"
    assert conversation["user_id"] == "u2"
    assert conversation["metadata"] == {"k": [1, {"x": None}]}
    same = await _create(client, tenant, {"user_id": "u3"}, **{"X-User-ID": "u3"})
    assert same["user_id"] == "u3"


async def test_create_rejects_bad_input(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    url, h = tenant.url("/conversations"), tenant.headers
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({"model_id": "nope"}, {}, "UNKNOWN_MODEL"),
        ({"model_id": "claude-3-5-haiku"}, {}, "MODEL_DEPRECATED"),
        ({"user_id": "a"}, {"X-User-ID": "b"}, "USER_ID_MISMATCH"),
        ({"title": "x" * 501}, {}, "VALIDATION_ERROR"),
        ({"title": "nul\x00"}, {}, "VALIDATION_ERROR"),
        ({"metadata": {"k": "nul\x00"}}, {}, "VALIDATION_ERROR"),
        ({"metadata": {"big": "x" * 70_000}}, {}, "VALIDATION_ERROR"),
        ({"metadata": [1, 2]}, {}, "VALIDATION_ERROR"),
        ({"status": "archived"}, {}, "VALIDATION_ERROR"),
        ({}, {"X-User-ID": "u" * 256}, "VALIDATION_ERROR"),
    ]
    for body, headers, code in cases:
        assert_error(await client.post(url, json=body, headers={**h, **headers}), 422, code)
    assert (await client.get(url, headers=h)).json()["total"] == 0


async def test_list_newest_updated_first_with_pagination(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    ids = [(await _create(client, tenant, {"title": f"c{i}"}))["conversation_id"] for i in range(4)]
    # Touch the oldest: it becomes the most recently updated.
    await asyncio.sleep(0.01)
    await client.patch(
        tenant.url(f"/conversations/{ids[0]}"), json={"title": "touched"}, headers=tenant.headers
    )
    page = (await client.get(tenant.url("/conversations?limit=3"), headers=tenant.headers)).json()
    assert page["total"] == 4
    assert [c["conversation_id"] for c in page["items"]] == [ids[0], ids[3], ids[2]]
    rest = (
        await client.get(tenant.url("/conversations?limit=3&offset=3"), headers=tenant.headers)
    ).json()
    assert [c["conversation_id"] for c in rest["items"]] == [ids[1]]


async def test_list_filters(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    a = await _create(client, tenant, {"user_id": "alice"})
    b = await _create(client, tenant, {"user_id": "bob"})
    await client.post(
        tenant.url(f"/conversations/{b['conversation_id']}/archive"), headers=tenant.headers
    )

    def ids(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        return [c["conversation_id"] for c in response.json()["items"]]

    url, h = tenant.url("/conversations"), tenant.headers
    assert ids(await client.get(url, params={"user_id": "alice"}, headers=h)) == [
        a["conversation_id"]
    ]
    assert ids(await client.get(url, params={"status": "archived"}, headers=h)) == [
        b["conversation_id"]
    ]
    assert (
        ids(await client.get(url, params={"status": "active", "user_id": "bob"}, headers=h)) == []
    )
    created = datetime.fromisoformat(a["created_at"])
    later = (created + timedelta(hours=1)).isoformat()
    earlier = (created - timedelta(hours=1)).isoformat()
    assert len(ids(await client.get(url, params={"created_after": earlier}, headers=h))) == 2
    assert ids(await client.get(url, params={"created_after": later}, headers=h)) == []
    assert ids(await client.get(url, params={"created_before": earlier}, headers=h)) == []
    assert len(ids(await client.get(url, params={"created_before": later}, headers=h))) == 2
    for params in (
        {"created_after": "yesterday"},
        {"created_after": "2026-01-01T00:00:00"},
        {"status": "gone"},
    ):
        assert_error(await client.get(url, params=params, headers=h), 422)


async def test_get_patch_archive(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    conversation = await _create(client, tenant, {"title": "first", "metadata": {"a": 1}})
    url = tenant.url(f"/conversations/{conversation['conversation_id']}")
    assert (await client.get(url, headers=tenant.headers)).json() == conversation

    patched = await client.patch(
        url, json={"metadata": {"b": 2}, "model_id": "claude-opus-4-5"}, headers=tenant.headers
    )
    assert patched.status_code == 200
    body = patched.json()
    assert body["metadata"] == {"b": 2}
    assert body["model_id"] == "claude-opus-4-5"
    assert body["title"] == "first"
    assert body["updated_at"] > conversation["updated_at"]
    assert (await client.patch(url, json={"title": None}, headers=tenant.headers)).json()[
        "title"
    ] is None

    for bad, code in (
        ({"model_id": "claude-3-5-haiku"}, "MODEL_DEPRECATED"),
        ({"model_id": None}, "VALIDATION_ERROR"),
        ({"metadata": None}, "VALIDATION_ERROR"),
        ({"user_id": "someone"}, "VALIDATION_ERROR"),
    ):
        assert_error(await client.patch(url, json=bad, headers=tenant.headers), 422, code)

    archived = await client.post(f"{url}/archive", headers=tenant.headers)
    assert archived.json()["status"] == "archived"
    assert archived.json()["archived_at"] is not None
    again = await client.post(f"{url}/archive", headers=tenant.headers)
    assert (
        again.status_code == 200 and again.json()["archived_at"] == archived.json()["archived_at"]
    )


async def test_delete_removes_messages(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    conversation = await _create(client, tenant)
    cid = conversation["conversation_id"]
    async with app.state.engine.begin() as conn:
        for seq, role in ((1, "user"), (2, "assistant")):
            await conn.execute(
                text(
                    "INSERT INTO messages (message_id, tenant_id, conversation_id, seq, role, content)"
                    ' VALUES (gen_random_uuid(), \'acme\', :c, :seq, :role, \'[{"type": "text", "text": "hi"}]\')'
                ),
                {"c": cid, "seq": seq, "role": role},
            )
    messages = (
        await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
    ).json()
    assert messages["total"] == 2
    assert [m["role"] for m in messages["items"]] == ["user", "assistant"]
    assert messages["items"][0]["content"] == [{"type": "text", "text": "hi"}]

    assert (
        await client.delete(tenant.url(f"/conversations/{cid}"), headers=tenant.headers)
    ).status_code == 204
    assert_error(await client.get(tenant.url(f"/conversations/{cid}"), headers=tenant.headers), 404)
    assert_error(
        await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers), 404
    )
    async with app.state.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM messages")) == 0


async def test_messages_empty_before_any_run(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    conversation = await _create(client, tenant)
    response = await client.get(
        tenant.url(f"/conversations/{conversation['conversation_id']}/messages"),
        headers=tenant.headers,
    )
    assert response.json() == {"items": [], "total": 0}


async def test_missing_or_malformed_ids(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    for method, path in (
        ("GET", missing),
        ("PATCH", missing),
        ("DELETE", missing),
        ("POST", f"{missing}/archive"),
        ("GET", f"{missing}/messages"),
    ):
        body = {"title": "x"} if method == "PATCH" else None
        response = await client.request(
            method, tenant.url(f"/conversations/{path}"), json=body, headers=tenant.headers
        )
        assert_error(response, 404, "NOT_FOUND")
    assert_error(
        await client.get(tenant.url("/conversations/not-a-uuid"), headers=tenant.headers), 422
    )


async def test_admin_may_act_in_any_tenant(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    created = await client.post(tenant.url("/conversations"), json={}, headers=ADMIN)
    assert created.status_code == 201
    assert (await client.get(tenant.url("/conversations"), headers=tenant.headers)).json()[
        "total"
    ] == 1
    assert_error(await client.get("/api/tenants/ghost/conversations", headers=ADMIN), 404)


async def test_timestamps_are_utc(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    conversation = await _create(client, tenant)
    created = datetime.fromisoformat(conversation["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)


async def test_list_totals_stay_exact(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    """Unfiltered totals come from trigger-kept counters; they must agree with COUNT(*)
    (forced here by a created_after filter that matches everything) after every change."""
    url, h = tenant.url("/conversations"), tenant.headers
    epoch = {"created_after": "2000-01-01T00:00:00Z"}

    async def totals(status: str | None = None) -> tuple[int, int]:
        params = {"status": status} if status else {}
        counted = (await client.get(url, params=params, headers=h)).json()["total"]
        exact = (await client.get(url, params={**params, **epoch}, headers=h)).json()["total"]
        return counted, exact

    ids = [(await _create(client, tenant))["conversation_id"] for _ in range(5)]
    await _create(client, other_tenant)
    assert await totals() == (5, 5)
    await client.post(f"{url}/{ids[0]}/archive", headers=h)
    await client.post(f"{url}/{ids[0]}/archive", headers=h)  # archiving twice counts once
    await client.patch(f"{url}/{ids[1]}", json={"title": "renamed"}, headers=h)
    await client.delete(f"{url}/{ids[2]}", headers=h)
    await client.delete(f"{url}/{ids[0]}", headers=h)
    assert await totals() == (3, 3)
    assert await totals("active") == (3, 3)
    assert await totals("archived") == (0, 0)
    assert (
        await client.get(other_tenant.url("/conversations"), headers=other_tenant.headers)
    ).json()["total"] == 1


async def test_deprecating_the_tenant_default_keeps_new_conversations_working(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    await client.patch(
        "/api/models/claude-sonnet-4-5/status", json={"status": "deprecated"}, headers=ADMIN
    )
    by_default = await client.post(tenant.url("/conversations"), json={}, headers=tenant.headers)
    assert by_default.status_code == 201
    assert by_default.json()["model_id"] == "claude-sonnet-4-5"
    chosen = await client.post(
        tenant.url("/conversations"), json={"model_id": "claude-sonnet-4-5"}, headers=tenant.headers
    )
    assert_error(chosen, 422, "MODEL_DEPRECATED")
