"""Re-attaching to a run by Last-Event-ID, and cancelling one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.conftest import TenantFixture, assert_error
from tests.integration.execute.streams import (
    follow,
    gone,
    new_conversation,
    parse_sse,
    start_turn,
    stream_turn,
)


async def test_reattach_replays_after_last_event_id(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    full = await stream_turn(client, tenant, cid, "Hello again")
    run_id = full.done["run_id"]
    for seen in (0, 3, len(full.events) - 1):
        replayed = await follow(client, tenant, run_id, seen)
        assert full.events[:seen] + replayed == full.events
    by_query = await client.get(
        tenant.url(f"/runs/{run_id}/events?after=5"), headers=tenant.headers
    )
    assert by_query.text.startswith("event: ") and "\nid: 6\n" in by_query.text
    # A Last-Event-ID that is not a seq is refused; "\xb2" reads as "²", a digit to
    # str.isdigit(); 3000000000 is past what a seq can be.
    for bad in (b"x", b"-1", b"\xb2", b"3000000000"):
        assert_error(
            await client.get(
                tenant.url(f"/runs/{run_id}/events"),
                headers=[(b"X-API-Key", tenant.key.encode()), (b"Last-Event-ID", bad)],
            ),
            422,
        )
    # An empty one is no position at all: the whole run.
    whole = await client.get(
        tenant.url(f"/runs/{run_id}/events"), headers={**tenant.headers, "Last-Event-ID": ""}
    )
    assert parse_sse(whole.text) == full.events


async def test_a_client_past_the_end_gets_done(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    """Re-attached at (or beyond) the last event, live or after the run, a client still
    gets `done`, as every stream ends with it."""
    cid = await new_conversation(client, tenant)
    original, run_id = await start_turn(client, tenant, cid, "scenario:slow:150")
    ahead = await follow(client, tenant, run_id, 100_000)  # live: waits for the end
    first = await original
    assert ahead == [first.events[-1]]
    assert await follow(client, tenant, run_id, len(first.events)) == [first.events[-1]]


async def test_reattach_to_a_live_run(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    cid = await new_conversation(client, tenant)
    original, run_id = await start_turn(client, tenant, cid, "scenario:slow:150")
    follower = await follow(client, tenant, run_id, 2)
    first = await original
    assert first.events[:2] + follower == first.events
    assert follower[-1][0] == "done"


async def test_cancel_mid_stream(
    client: httpx.AsyncClient, tenant: TenantFixture, tmp_path: Path
) -> None:
    cid = await new_conversation(client, tenant)
    texting = asyncio.Event()
    stream, run_id = await start_turn(client, tenant, cid, "scenario:slow:1000", texting)
    await asyncio.wait_for(texting.wait(), 60)  # however slow the machine is to start it
    await asyncio.sleep(0.5)
    cancelled = await client.post(tenant.url(f"/runs/{run_id}/cancel"), headers=tenant.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error_type"] is None  # at the user's request: no error
    assert await gone(tmp_path / "data", tenant, cid, seconds=5)
    result = await asyncio.wait_for(stream, 30)
    assert result.done["status"] == "cancelled"
    assert [e for e, _ in result.events].count("done") == 1
    assert "error" not in [e for e, _ in result.events]
    # What was said so far is kept: the prompt, and the answer as far as it streamed.
    messages = (
        await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
    ).json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert result.text and messages[1]["content"] == [{"type": "text", "text": result.text}]
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


async def test_deleting_a_conversation_cancels_its_run(
    client: httpx.AsyncClient, tenant: TenantFixture, tmp_path: Path
) -> None:
    cid = await new_conversation(client, tenant)
    stream, run_id = await start_turn(client, tenant, cid, "scenario:slow:1000")
    await asyncio.sleep(1.5)
    deleted = await client.delete(tenant.url(f"/conversations/{cid}"), headers=tenant.headers)
    assert deleted.status_code == 204
    result = await asyncio.wait_for(stream, 30)
    assert result.done["status"] == "cancelled"
    assert result.of("error")[-1]["error_type"] == "deleted"
    assert await gone(tmp_path / "data", tenant, cid)
    assert_error(await client.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers), 404)
