"""Staying real-time under load: agents run nicer than the service (and what they start
inherits it), nicer still once they have answered; a busy pool answers 503 SERVICE_BUSY
with Retry-After, not "database not reachable"; and during a burst of runs no connection
sits idle in a transaction longer than a query."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import ADMIN, TenantFixture, assert_error, create_tenant
from tests.integration.execute.streams import (
    GROUPED,
    agent_pids,
    hostile,
    new_conversation,
    report,
    running_service,
    scheduling_group,
    stream_turn,
)

pytestmark = pytest.mark.parametrize("wire", ["anthropic"], indirect=True)

# The service's own scheduling group ("" in the kernel's first, or without the feature).
SERVICE_GROUP = scheduling_group()


def _niceness(pids: list[int]) -> set[int]:
    """The niceness of every thread of these processes (Linux keeps one per thread)."""
    return {
        os.getpriority(os.PRIO_PROCESS, thread.id)
        for pid in pids
        for thread in psutil.Process(pid).threads()
    }


def _groups(pids: list[int]) -> set[str]:
    """The niceness of the scheduling groups of these processes other than the service's
    (a jail is a session, so a group, of its own only where the service has a terminal)."""
    groups = (scheduling_group(pid) for pid in pids)
    return {group.split()[-1] for group in groups if group not in ("", SERVICE_GROUP)}


# What the agent's Bash reports: its thread's niceness, then its scheduling group's, as
# it starts and after a CPU-second of work (the CLI runs Bash in a sandbox of its own, a
# new session: where sessions are scheduling groups, that group is made nice meanwhile).
_PRIORITY = (
    "nice; cut -d' ' -f3 /proc/self/autogroup;"
    " timeout 1.5 sh -c 'while :; do :; done'; cut -d' ' -f3 /proc/self/autogroup"
)


async def test_agents_start_nicer_than_the_service_and_answer_nicer_still(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    """Agents start AGENT_NICE (10) below the service, and what they start follows, the
    scheduling group of the sandbox the CLI runs Bash in included (a session of its own:
    where the kernel groups sessions, it would otherwise compete with the whole service
    as an equal); once one has answered, every thread and group of it drops to
    AGENT_ANSWERING_NICE (19), so the agents still starting go first."""
    settings = {"agent_nice": 10, "agent_answering_nice": 19, "offline_model_wire": wire}
    async with running_service(database_url, tmp_path, **settings) as (app, client):
        tenant = await create_tenant(client)
        await client.put(tenant.url(), json={"settings": {"bash_enabled": True}}, headers=ADMIN)
        cid = await new_conversation(client, tenant)
        service = psutil.Process().nice()
        # The agent's first output is a tool call, not text: Bash runs while it still starts.
        first = await stream_turn(client, tenant, cid, hostile(["Bash", {"command": _PRIORITY}]))
        thread, _, group = report(first)[0].split(": ", 1)[1].splitlines()
        assert thread == str(service + 10), report(first)
        if GROUPED:
            assert group == "10", report(first)
        # It has answered (the report is text); it stays warm for the next turn.
        pids = agent_pids(app.state.settings.data_dir.resolve(), tenant, cid)
        assert pids
        for _ in range(50):  # the drop runs beside the event loop
            if _niceness(pids) == {19} and (not GROUPED or _groups(pids) <= {"19"}):
                break
            await asyncio.sleep(0.05)
        assert _niceness(pids) == {19}
        if GROUPED:
            assert _groups(pids) <= {"19"}
        second = await stream_turn(client, tenant, cid, hostile(["Bash", {"command": _PRIORITY}]))
        thread, _, group = report(second)[0].split(": ", 1)[1].splitlines()
        assert thread == "19", report(second)
        if GROUPED:
            assert group == "19", report(second)


async def test_a_busy_pool_is_503_service_busy(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    async with running_service(database_url, tmp_path, db_pool_size=1, db_pool_timeout=0.3) as (
        app,
        client,
    ):
        held = [await app.state.engine.connect() for _ in range(2)]  # the pool, and overflow
        try:
            response = await client.get("/api/models", headers=ADMIN)
        finally:
            for connection in held:
                await connection.close()
        assert_error(response, 503, "SERVICE_BUSY")
        assert response.headers["retry-after"] == "2"
        assert (await client.get("/api/models", headers=ADMIN)).status_code == 200


async def test_no_transaction_waits_on_an_agent(
    client: httpx.AsyncClient, app: FastAPI, database_url: URL, tenant: TenantFixture
) -> None:
    """Six runs at once (more than start at once), and followers: every 20 ms, the
    connections of this database idle in a transaction for longer than half a second."""
    engine = create_async_engine(database_url)
    held: list[tuple[str, float]] = []
    done = asyncio.Event()

    async def watch() -> None:
        async with engine.connect() as conn:
            while not done.is_set():
                rows = await conn.execute(
                    text(
                        "SELECT left(query, 200), extract(epoch FROM now() - state_change)"
                        " FROM pg_stat_activity WHERE datname = current_database()"
                        " AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
                    )
                )
                held.extend((q, s) for q, s in rows if s > 0.5)
                await conn.commit()
                await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        cids = [await new_conversation(client, tenant) for _ in range(6)]
        streams = await asyncio.gather(
            *(stream_turn(client, tenant, cid, "scenario:slow:100") for cid in cids)
        )
    finally:
        done.set()
        await watcher
        await engine.dispose()
    assert [s.done["status"] for s in streams] == ["success"] * 6
    assert held == [], held
