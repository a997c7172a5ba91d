"""Re-attaching to a run by Last-Event-ID, and cancelling one."""

from __future__ import annotations

import asyncio
import json

import httpx
import psutil
from httpx_sse import aconnect_sse

from app.services.execute.options import workspace_dir
from tests.conftest import TenantFixture, assert_error
from tests.integration.execute.streams import new_conversation, stream_turn


async def _events(
    client: httpx.AsyncClient, tenant: TenantFixture, run_id: str, **headers: str
) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    events = []
    async with aconnect_sse(
        client,
        "GET",
        tenant.url(f"/runs/{run_id}/events"),
        headers={**tenant.headers, **headers},
        timeout=120,
    ) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            events.append((sse.event, json.loads(sse.data)))
    return events


async def _wait_for_run(client: httpx.AsyncClient, tenant: TenantFixture, cid: str) -> str:
    for _ in range(400):
        messages = (
            await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
        ).json()
        if messages["items"]:
            return str(messages["items"][0]["run_id"])
        await asyncio.sleep(0.025)
    raise AssertionError("the run did not start")


async def test_reattach_replays_after_last_event_id(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    full = await stream_turn(client, tenant, cid, "Hello again")
    run_id = full.done["run_id"]
    for seen in (0, 3, len(full.events) - 1):
        replayed = await _events(client, tenant, run_id, **{"Last-Event-ID": str(seen)})
        assert full.events[:seen] + replayed == full.events
    by_query = await client.get(
        tenant.url(f"/runs/{run_id}/events?after=5"), headers=tenant.headers
    )
    assert by_query.text.startswith("event: ") and "\nid: 6\n" in by_query.text
    assert_error(
        await client.get(
            tenant.url(f"/runs/{run_id}/events"), headers={**tenant.headers, "Last-Event-ID": "x"}
        ),
        422,
    )


async def test_reattach_to_a_live_run(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    cid = await new_conversation(client, tenant)
    original = asyncio.create_task(stream_turn(client, tenant, cid, "scenario:slow:150"))
    run_id = await _wait_for_run(client, tenant, cid)
    follower = await _events(client, tenant, run_id, **{"Last-Event-ID": "2"})
    first = await original
    assert first.events[:2] + follower == first.events
    assert follower[-1][0] == "done"


async def test_cancel_mid_stream(
    client: httpx.AsyncClient, tenant: TenantFixture, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    cid = await new_conversation(client, tenant)
    stream = asyncio.create_task(stream_turn(client, tenant, cid, "scenario:slow:1000"))
    run_id = await _wait_for_run(client, tenant, cid)
    for _ in range(200):  # until the agent is answering
        run = (await client.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)).json()
        if run["status"] == "running":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)
    cancelled = await client.post(tenant.url(f"/runs/{run_id}/cancel"), headers=tenant.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    result = await asyncio.wait_for(stream, 30)
    assert result.done["status"] == "cancelled"
    assert [e for e, _ in result.events].count("done") == 1
    # The agent's process is gone.
    workspace = str(workspace_dir(tmp_path / "data", tenant.tenant_id, cid))
    for _ in range(50):
        alive = [p for p in psutil.process_iter(["cwd"]) if p.info["cwd"] == workspace]
        if not alive:
            break
        await asyncio.sleep(0.1)
    assert not alive
    messages = (
        await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
    ).json()
    assert messages["items"][0]["role"] == "user"
    again = await client.post(tenant.url(f"/runs/{run_id}/cancel"), headers=tenant.headers)
    assert_error(again, 409, "RUN_FINISHED")


async def test_other_tenants_cannot_reattach_or_cancel(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    run_id = (await stream_turn(client, tenant, cid, "hi")).done["run_id"]
    for method, path in (("GET", f"/runs/{run_id}/events"), ("POST", f"/runs/{run_id}/cancel")):
        assert_error(
            await client.request(method, other_tenant.url(path), headers=other_tenant.headers), 404
        )
        assert_error(
            await client.request(method, tenant.url(path), headers=other_tenant.headers), 404
        )
