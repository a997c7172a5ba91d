"""A run a crashed process left running is marked interrupted when the service starts,
and its stream ends with `error` and `done`, so no client waits for it forever."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text

from app.main import create_app
from tests.conftest import TenantFixture, make_settings
from tests.integration.execute.streams import new_conversation
from tests.integration.live_server import serve_in_loop

pytestmark = pytest.mark.parametrize("wire", ["anthropic"], indirect=True)


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

    restarted = create_app(make_settings(database_url, tmp_path / "second"))
    async with (
        restarted.router.lifespan_context(restarted),
        serve_in_loop(restarted) as url,
        httpx.AsyncClient(base_url=url) as second,
    ):
        run = (await second.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)).json()
        assert run["status"] == "interrupted" and run["error_type"] == "interrupted"
        replay = await second.get(
            tenant.url(f"/runs/{run_id}/events?after=1"), headers=tenant.headers
        )
        blocks = [b for b in replay.text.strip().split("\n\n") if b]
        kinds = [b.split("\n")[0] for b in blocks]
        assert kinds == ["event: error", "event: done"]
        done = json.loads(blocks[-1].split("data: ", 1)[1])
        assert done["status"] == "error" and done["seq"] == 3
        # The conversation takes new runs again.
        streamed = await second.post(
            tenant.url(f"/conversations/{cid}/stream"),
            json={"user_input": "again"},
            headers=tenant.headers,
        )
        assert streamed.status_code == 200 and "event: done" in streamed.text
