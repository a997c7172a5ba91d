"""Health checks, metrics and the request id."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import assert_error


async def test_health_checks_the_database(client: httpx.AsyncClient) -> None:
    for _ in range(100):  # the node's worker starts in the background
        response = await client.get("/health")
        if response.json().get("takes_runs"):
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 200
    state = client._transport.app.state
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "schema_revision": state.schema_head,
        "agent_sandbox": "on",
        "node_id": state.cluster.node_id,
        "roles": ["api", "worker"],
        "takes_runs": True,
    }


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json()["status"] == "ok"
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["schema_revision"] == client._transport.app.state.schema_head


async def test_metrics_count_requests_by_route(client: httpx.AsyncClient) -> None:
    await client.get("/health/live")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'http_requests_total{method="GET",route="/health/live",status="200"}' in response.text


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_request_id_is_made_when_missing_or_unsafe(client: httpx.AsyncClient) -> None:
    made = await client.get("/health/live")
    assert len(made.headers["x-request-id"]) == 32
    unsafe = await client.get("/health/live", headers={"X-Request-ID": "a b<script>"})
    assert unsafe.headers["x-request-id"] != "a b<script>"


async def test_unknown_route_and_method_use_the_envelope(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nope"), 404, "NOT_FOUND")
    assert_error(await client.delete("/health"), 405, "METHOD_NOT_ALLOWED")
    # The Allow header names every method of the path, not only its first route's.
    refused = await client.request("OPTIONS", "/api/tenants/acme/conversations")
    assert_error(refused, 405, "METHOD_NOT_ALLOWED")
    assert refused.headers["allow"] == "GET, POST"
    refused = await client.delete("/api/tenants")
    assert refused.headers["allow"] == "GET, POST"
