"""Concurrency limits: a run over the limit waits (queued, with its position) and then
runs; a full queue answers 429 at once; a run waits no longer than the queue timeout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL

from tests.conftest import (
    ADMIN,
    assert_error,
    create_tenant,
)
from tests.integration.execute.streams import (
    Stream,
    new_conversation,
    running_service,
    start_turn,
    stream_turn,
    wait_running,
)

pytestmark = pytest.mark.parametrize("wire", ["anthropic"], indirect=True)

Client = Callable[..., Any]


async def test_a_run_over_the_global_limit_waits_then_runs(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    async with running_service(database_url, tmp_path, max_concurrent_runs=1) as (_, client):
        tenant = await create_tenant(client, "acme")
        first_cid, second_cid = (
            await new_conversation(client, tenant),
            await new_conversation(client, tenant),
        )
        first, first_run = await start_turn(client, tenant, first_cid, "scenario:slow:400")
        await wait_running(client, tenant, first_run)
        second = await stream_turn(client, tenant, second_cid, "Me next")
        queued = [p for p in second.of("progress") if p["type"] == "queued"]
        assert queued and queued[0]["position"] == 1
        assert second.done["status"] == "success"
        assert (await first).done["status"] == "success"


async def test_the_tenant_limit_applies_per_tenant(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    async with running_service(database_url, tmp_path, max_concurrent_runs=5) as (_, client):
        tenant = await create_tenant(client, "acme", settings={"max_concurrent_runs": 1})
        other = await create_tenant(client, "globex")
        first_cid = await new_conversation(client, tenant)
        first, first_run = await start_turn(client, tenant, first_cid, "scenario:slow:400")
        await wait_running(client, tenant, first_run)
        # Another tenant is not held up...
        elsewhere = await stream_turn(client, other, await new_conversation(client, other), "hi")
        assert not [p for p in elsewhere.of("progress") if p["type"] == "queued"]
        # ...but the tenant's own second run waits for its first.
        mine = await stream_turn(client, tenant, await new_conversation(client, tenant), "hi")
        assert [p for p in mine.of("progress") if p["type"] == "queued"]
        assert mine.done["status"] == "success"
        await first


async def test_full_queue_is_429_and_waiting_has_a_timeout(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    async with running_service(
        database_url, tmp_path, max_concurrent_runs=1, max_queued_runs=1, run_queue_timeout=2
    ) as (_, client):
        tenant = await create_tenant(client, "acme")
        cids = [await new_conversation(client, tenant) for _ in range(3)]
        first, first_run = await start_turn(client, tenant, cids[0], "scenario:slow:400")
        await wait_running(client, tenant, first_run)
        waiting, _ = await start_turn(client, tenant, cids[1], "I will wait")  # in the queue
        refused = await client.post(
            tenant.url(f"/conversations/{cids[2]}/stream"),
            json={"user_input": "me too"},
            headers=tenant.headers,
        )
        assert_error(refused, 429, "QUEUE_FULL")
        timed_out: Stream = await waiting
        (error,) = timed_out.of("error")
        assert error["error_type"] == "queue_timeout" and error["recoverable"] is True
        assert timed_out.done["status"] == "error"
        run = (
            await client.get(
                tenant.url(f"/runs/{timed_out.done['run_id']}"), headers=tenant.headers
            )
        ).json()
        assert run["status"] == "failed" and run["error_type"] == "queue_timeout"
        assert (await first).done["status"] == "success"
        assert (await client.get("/api/models", headers=ADMIN)).status_code == 200


async def test_a_run_has_a_deadline(database_url: URL, tmp_path: Path, wire: str) -> None:
    async with running_service(database_url, tmp_path, run_timeout=2) as (_, client):
        tenant = await create_tenant(client, "acme")
        stream = await stream_turn(
            client, tenant, await new_conversation(client, tenant), "scenario:slow:1000"
        )
        (error,) = stream.of("error")
        assert error["error_type"] == "run_timeout"
        assert stream.done["status"] == "error"
        run = (
            await client.get(tenant.url(f"/runs/{stream.done['run_id']}"), headers=tenant.headers)
        ).json()
        assert run["status"] == "failed" and run["error_type"] == "run_timeout"
