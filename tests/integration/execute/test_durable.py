"""Runs outlive their connections: a client that drops re-attaches and reads on with
no gap and no duplicate; several clients follow one run; the conversation's agent
process stays warm between turns (and is replaced, evicted or ended as it should be);
shutdown ends runs and says why. All over a real Uvicorn server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text

from tests.conftest import ADMIN, TenantFixture, assert_error, create_tenant
from tests.integration.execute.streams import (
    Event,
    Stream,
    agent_pids,
    follow,
    gone,
    new_conversation,
    running_service,
    start_turn,
    stream_turn,
    stream_until,
    wait_running,
)

CACHE_USAGE = {
    "input_tokens": 1000,
    "output_tokens": 500,
    "cache_creation_5m_tokens": 2000,
    "cache_creation_1h_tokens": 1000,
    "cache_read_tokens": 3000,
    "total_tokens": 7500,
}


async def _persisted(app: FastAPI, run_id: str) -> list[Event]:
    async with app.state.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT type, data FROM run_events WHERE run_id = :r ORDER BY seq"), {"r": run_id}
        )
        return [(row.type, row.data) for row in rows]


def _setup_message(events: list[Event]) -> str:
    return next(d["message"] for e, d in events if e == "progress" and d["type"] == "setup")


async def test_disconnect_then_reattach_by_last_event_id(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    chunks: list[Event] = []

    def two_chunks_in(event: Event) -> bool:  # then the connection drops mid-answer
        if event[0] == "text_delta":
            chunks.append(event)
        return len(chunks) == 2

    run_id, seen, last_id = await stream_until(
        client, tenant, cid, "scenario:slow:300", two_chunks_in
    )
    assert seen[-1][0] == "text_delta"
    await asyncio.sleep(0.5)  # the run goes on with nobody listening
    rest = await follow(client, tenant, run_id, int(last_id))
    assert rest[0][1]["seq"] == int(last_id) + 1
    assert rest[-1][0] == "done" and rest[-1][1]["status"] == "success"
    persisted = await _persisted(app, run_id)
    assert seen + rest == persisted
    assert [data["seq"] for _, data in persisted] == list(range(1, len(persisted) + 1))
    # The whole answer was recorded, though no client read all of it live.
    messages = (
        await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
    ).json()["items"]
    assert messages[-1]["role"] == "result" and "Slowly" in messages[-1]["content"][0]["text"]


async def test_two_followers_see_the_same_events(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    original, run_id = await start_turn(client, tenant, cid, "scenario:slow:200")
    first, second = await asyncio.gather(
        follow(client, tenant, run_id, 0), follow(client, tenant, run_id, 0)
    )
    started = await original
    assert first == second == started.events == await _persisted(app, run_id)
    assert first[-1][0] == "done"


async def test_the_next_turn_reuses_the_warm_session(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    cid = await new_conversation(client, tenant)
    first = await stream_turn(client, tenant, cid, "Remember the word pelican")
    assert _setup_message(first.events) == "Starting the agent"
    warm = agent_pids(data_dir, tenant, cid)
    assert len(warm) == 1  # still up after the turn

    second = await stream_turn(client, tenant, cid, "scenario:cache")
    assert _setup_message(second.events) == "Continuing the agent's session"
    assert agent_pids(data_dir, tenant, cid) == warm  # no new process, so no resume
    assert second.done["session_id"] == first.done["session_id"]
    assert "Remember the word pelican" in str(app.state.offline_model.requests[-1]["body"])
    # The process counts usage over its life; the run is charged for its own turn only.
    assert second.done["usage"] == CACHE_USAGE and second.done["cost_usd"] == "0.024900"
    run = (
        await client.get(tenant.url(f"/runs/{second.done['run_id']}"), headers=tenant.headers)
    ).json()
    assert run["usage"]["total_tokens"] == CACHE_USAGE["total_tokens"]

    # A new system prompt needs a new process, which resumes the session.
    changed = await client.put(
        f"/api/tenants/{tenant.tenant_id}", json={"system_prompt": "Answer tersely."}, headers=ADMIN
    )
    assert changed.status_code == 200, changed.text
    third = await stream_turn(client, tenant, cid, "And now?")
    assert _setup_message(third.events) == "Starting the agent"
    replaced = agent_pids(data_dir, tenant, cid)
    assert len(replaced) == 1 and replaced != warm
    request = str(app.state.offline_model.requests[-1]["body"])
    assert "Answer tersely." in request and "Remember the word pelican" in request
    assert third.done["session_id"] == first.done["session_id"]


async def test_a_warm_turn_after_background_agents_gets_its_own_answer(
    client: httpx.AsyncClient, tenant: TenantFixture, tmp_path: Path
) -> None:
    """Two sub-agents finish in the background; their notification turns belong to the
    run that started them, which ends only when the CLI is idle, so nothing of theirs
    is left to be read as the next turn's."""
    cid = await new_conversation(client, tenant)
    first = await stream_turn(client, tenant, cid, "scenario:subagent:2")
    assert first.done["status"] == "success"
    assert len(first.of("subagent_end")) == 2
    second = await stream_turn(client, tenant, cid, "And now?")
    assert _setup_message(second.events) == "Continuing the agent's session"
    assert "And now?" in (second.done["result"] or "")
    assert not second.of("subagent_end") and not second.of("tool_call")
    assert second.done["usage"]["input_tokens"] == 100  # one model call: its own


async def test_warm_sessions_are_evicted_and_expire(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    data_dir = tmp_path / "data"
    settings: dict[str, Any] = {
        "offline_model_wire": wire,
        "max_warm_sessions": 1,
        "session_idle_seconds": 3,
    }
    async with running_service(database_url, tmp_path, **settings) as (_, client):
        tenant = await create_tenant(client)
        older = await new_conversation(client, tenant)
        await stream_turn(client, tenant, older, "hello")
        assert agent_pids(data_dir, tenant, older)
        newer = await new_conversation(client, tenant)
        await stream_turn(client, tenant, newer, "hello")
        assert agent_pids(data_dir, tenant, newer)
        assert await gone(data_dir, tenant, older)  # the least recently used went first
        assert await gone(data_dir, tenant, newer, seconds=10)  # idle for too long
        # The next turn starts a process and resumes the session.
        again = await stream_turn(client, tenant, newer, "still there?")
        assert _setup_message(again.events) == "Starting the agent"
        assert again.done["status"] == "success"


async def test_archive_and_delete_end_warm_sessions(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    archived, deleted, mine, theirs = (
        await new_conversation(client, tenant),
        await new_conversation(client, tenant),
        await new_conversation(client, tenant),
        await new_conversation(client, other_tenant),
    )
    for owner, cid in (
        (tenant, archived),
        (tenant, deleted),
        (tenant, mine),
        (other_tenant, theirs),
    ):
        await stream_turn(client, owner, cid, "hello")
        assert agent_pids(data_dir, owner, cid)
    archive = await client.post(
        tenant.url(f"/conversations/{archived}/archive"), headers=tenant.headers
    )
    assert archive.status_code == 200
    assert await gone(data_dir, tenant, archived)
    delete = await client.delete(tenant.url(f"/conversations/{deleted}"), headers=tenant.headers)
    assert delete.status_code == 204
    assert await gone(data_dir, tenant, deleted)
    assert (await client.delete(tenant.url(), headers=ADMIN)).status_code == 204
    assert await gone(data_dir, tenant, mine)
    assert agent_pids(data_dir, other_tenant, theirs)  # another tenant's stays warm


async def test_without_warm_sessions_each_turn_resumes(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    data_dir = tmp_path / "data"
    settings = {"offline_model_wire": wire, "max_warm_sessions": 0}
    async with running_service(database_url, tmp_path, **settings) as (app, client):
        tenant = await create_tenant(client)
        cid = await new_conversation(client, tenant)
        first = await stream_turn(client, tenant, cid, "Remember the word pelican")
        assert await gone(data_dir, tenant, cid)
        second = await stream_turn(client, tenant, cid, "scenario:cache")
        assert _setup_message(second.events) == "Starting the agent"
        assert second.done["session_id"] == first.done["session_id"]
        assert "Remember the word pelican" in str(app.state.offline_model.requests[-1]["body"])
        assert second.done["usage"] == CACHE_USAGE


async def _ended_by_shutdown(
    client: httpx.AsyncClient, tenant: TenantFixture, stream: asyncio.Task[Stream], run_id: str
) -> None:
    ended = await asyncio.wait_for(stream, 30)
    assert ended.of("error")[-1]["error_type"] == "shutdown"
    assert ended.done["status"] == "cancelled"
    run = (await client.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)).json()
    assert run["status"] == "cancelled" and run["error_type"] == "shutdown"


@pytest.mark.parametrize("wire", ["anthropic"], indirect=True)
async def test_shutdown_cancels_late_runs_and_says_why(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    data_dir = tmp_path / "data"
    settings = {"offline_model_wire": wire, "shutdown_timeout": 0.5, "max_concurrent_runs": 1}
    async with running_service(database_url, tmp_path, **settings) as (app, client):
        tenant = await create_tenant(client)
        idle = await new_conversation(client, tenant)
        await stream_turn(client, tenant, idle, "hello")
        assert agent_pids(data_dir, tenant, idle)  # warm
        busy = await new_conversation(client, tenant)
        stream, run_id = await start_turn(client, tenant, busy, "scenario:slow:1000")
        await wait_running(client, tenant, run_id)
        queued, queued_run_id = await start_turn(
            client, tenant, await new_conversation(client, tenant), "me next"
        )
        await asyncio.sleep(1.5)

        # At the stop signal a queued run ends at once; the running one goes on...
        app.state.executor.stop_taking_runs()
        await _ended_by_shutdown(client, tenant, queued, queued_run_id)
        busy_run = await client.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)
        assert busy_run.json()["status"] == "running"
        # ...until the grace period ends.
        await app.state.executor.shutdown(0.5)
        await _ended_by_shutdown(client, tenant, stream, run_id)
        # No process is left, warm or busy, and no new run is taken.
        assert not agent_pids(data_dir, tenant, idle) and not agent_pids(data_dir, tenant, busy)
        refused = await client.post(
            tenant.url(f"/conversations/{idle}/stream"),
            json={"user_input": "hello"},
            headers=tenant.headers,
        )
        assert_error(refused, 503, "SERVICE_UNAVAILABLE")
