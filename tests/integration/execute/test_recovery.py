"""A run a crashed process left running is marked interrupted when the service starts,
and its stream ends with `error` and `done`, so no client waits for it forever."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text

from tests.conftest import (
    ADMIN_KEY,
    TenantFixture,
    create_tenant,
)
from tests.integration.execute.streams import (
    Event,
    follow,
    new_conversation,
    parse_sse,
    running_service,
    start_turn,
    stream_turn,
    stream_until,
)
from tests.integration.live_server import spawn_service

pytestmark = pytest.mark.parametrize("wire", ["anthropic"], indirect=True)


def _spawn(
    database_url: URL, data_dir: Path, wire: str, **settings: str
) -> tuple[subprocess.Popen[Any], str]:
    """`python -m app` on this database, migrated already, with the offline model."""
    return spawn_service(
        {
            "DATABASE_URL": database_url.render_as_string(hide_password=False),
            "DB_AUTO_MIGRATE": "false",
            "ADMIN_API_KEYS": ADMIN_KEY,
            "DATA_DIR": str(data_dir),
            "MODEL_PROVIDER": "offline",
            "OFFLINE_MODEL_WIRE": wire,
            "LOG_LEVEL": "WARNING",
            **settings,
        }
    )


async def test_abandoned_runs_are_interrupted_at_start(
    client: httpx.AsyncClient,
    app: FastAPI,
    tenant: TenantFixture,
    database_url: URL,
    tmp_path: Path,
) -> None:
    cid = await new_conversation(client, tenant)
    async with app.state.engine.begin() as conn:
        run_id = await conn.scalar(
            text(
                "INSERT INTO runs (run_id, tenant_id, conversation_id, model_id, status, user_input,"
                " input_tokens, output_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens,"
                " cache_read_tokens, cost_usd, num_turns)"
                " VALUES (gen_random_uuid(), 'acme', :c, 'claude-sonnet-4-5', 'running', 'hi',"
                " 0, 0, 0, 0, 0, 0, 0) RETURNING run_id"
            ),
            {"c": cid},
        )
        await conn.execute(
            text(
                "INSERT INTO run_events (run_id, seq, tenant_id, type, data) VALUES (:r, 1, 'acme', 'init', '{}')"
            ),
            {"r": run_id},
        )

    async with running_service(database_url, tmp_path / "second", data_dir=tmp_path / "first") as (
        _,
        second,
    ):
        run = (await second.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)).json()
        assert run["status"] == "interrupted" and run["error_type"] == "interrupted"
        replay = await second.get(
            tenant.url(f"/runs/{run_id}/events?after=1"), headers=tenant.headers
        )
        events = parse_sse(replay.text)
        assert [kind for kind, _ in events] == ["error", "done"]
        assert events[-1][1]["status"] == "error" and events[-1][1]["seq"] == 3
        # The conversation takes new runs again.
        streamed = await second.post(
            tenant.url(f"/conversations/{cid}/stream"),
            json={"user_input": "again"},
            headers=tenant.headers,
        )
        assert streamed.status_code == 200 and "event: done" in streamed.text


async def test_a_killed_service_leaves_a_run_that_the_next_start_interrupts(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    """A real crash: the service is killed mid-answer. Its next start (the same node: the
    same data directory) marks the run interrupted at once, and a client that re-attaches
    from where it was gets `error` and `done`; the orphaned agent process ends by itself
    (the suite counts leftovers)."""
    service, base = _spawn(database_url, tmp_path / "first", wire)

    def crash_mid_answer(event: Event) -> bool:
        if event[0] != "text_delta":
            return False
        service.kill()  # mid-answer, as a crash would
        return True

    try:
        async with httpx.AsyncClient(base_url=base) as first:
            tenant = await create_tenant(first, "acme")
            cid = await new_conversation(first, tenant)
            run_id, seen, _ = await stream_until(
                first, tenant, cid, "scenario:slow:400", crash_mid_answer
            )
    finally:
        service.kill()
        service.wait(timeout=30)

    async with running_service(database_url, tmp_path / "second", data_dir=tmp_path / "first") as (
        _,
        second,
    ):
        run = (await second.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)).json()
        assert run["status"] == "interrupted" and run["error_type"] == "interrupted"
        rest = await follow(second, tenant, run_id, seen[-1][1]["seq"])
        # The client saw events the killed process had not stored yet; those seqs went
        # to the ending, so it gets `done` (and `error` if it was not past it).
        assert [kind for kind, _ in rest][-1:] == ["done"] and len(rest) <= 2
        assert rest[-1][1]["status"] == "error"
        assert (await stream_turn(second, tenant, cid, "again")).done["status"] == "success"


async def test_a_stop_signal_lets_runs_finish_then_cancels_them_saying_why(
    database_url: URL, tmp_path: Path, wire: str
) -> None:
    """SIGTERM to `python -m app` with a run going past SHUTDOWN_TIMEOUT: no new
    connection is taken, the run is cancelled and recorded with error_type `shutdown`, its events end
    with `error` and `done`, and the service and its agent processes are gone."""
    service, base = _spawn(database_url, tmp_path / "first", wire, SHUTDOWN_TIMEOUT="2")
    try:
        async with httpx.AsyncClient(base_url=base) as first:
            tenant = await create_tenant(first, "acme")
            cid = await new_conversation(first, tenant)
            stream, run_id = await start_turn(first, tenant, cid, "scenario:slow:1500")
            await asyncio.sleep(1)
            service.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            with pytest.raises(httpx.ConnectError):  # it takes no new connection
                await first.get("/health/live")
            await asyncio.gather(stream, return_exceptions=True)  # cut, or ended
            # Uvicorn ends by re-raising the signal it caught, once shut down.
            assert await asyncio.to_thread(service.wait, 30) in (0, -signal.SIGTERM)
    finally:
        service.kill()
        service.wait(timeout=30)

    async with running_service(database_url, tmp_path / "second") as (_, second):
        run = (await second.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)).json()
        assert run["status"] == "cancelled" and run["error_type"] == "shutdown"
        events = await follow(second, tenant, run_id, 0)
        errors = [data for kind, data in events if kind == "error"]
        assert [e["error_type"] for e in errors] == ["shutdown"]
        assert events[-1][0] == "done" and events[-1][1]["status"] == "cancelled"
