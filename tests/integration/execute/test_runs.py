"""Agent runs end to end: the real SDK and its bundled CLI, driven through the API,
against the scripted model server, in the Anthropic and the Bedrock wire formats."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from app.services.execute.offline_model.scenarios import ESCAPE_PATH
from app.services.execute.spec import workspace_dir
from tests.conftest import ADMIN, TenantFixture, assert_error
from tests.integration.execute.streams import Stream, new_conversation, stream_turn


async def _rows(app: FastAPI, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with app.state.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(text(sql), params)]


def _run_id(stream: Stream) -> str:
    return str(stream.done["run_id"])


def assert_well_formed(stream: Stream) -> None:
    """seq 1, 2, 3…, ids equal to seq, run_id and timestamp everywhere, `done` last."""
    assert stream.status_code == 200, stream.events
    assert [data["seq"] for _, data in stream.events] == list(range(1, len(stream.events) + 1))
    assert stream.ids == [str(n) for n in range(1, len(stream.events) + 1)]
    assert len({data["run_id"] for _, data in stream.events}) == 1
    assert all(data["timestamp"] for _, data in stream.events)
    assert [e for e, _ in stream.events].count("done") == 1
    assert stream.events[-1][0] == "done"


async def test_text_deltas_that_come_together_arrive_merged(
    client: httpx.AsyncClient, tenant: TenantFixture, wire: str
) -> None:
    """The model's text deltas 10 ms apart: those that reach the egress bridge within its
    hold (AGENT_STREAM_HOLD_MS, 50) reach the agent, and so the client, as one delta on
    the Anthropic wire; the text is whole and in order. (Bedrock's frames go on as
    they are.)"""
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:paced:40x10")
    assert stream.done["status"] == "success"
    sent = [float(word) for word in stream.text.split()]
    assert len(sent) == 40 and sent == sorted(sent)
    if wire == "anthropic":
        assert len(stream.of("text_delta")) < 40


async def test_plain_answer(client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "Hello there, agent")
    assert_well_formed(stream)
    kinds = [e for e, _ in stream.events]
    assert kinds[0] == "progress" and stream.events[0][1]["type"] == "setup"
    assert kinds.index("init") < kinds.index("text_delta") < kinds.index("assistant")
    assert kinds[-2:] == ["context_status", "done"]
    init = stream.of("init")[0]
    assert init["conversation_id"] == cid and init["session_id"] and "Write" in init["tools"]
    # Sent at once, the answer's deltas may reach the agent merged (the bridge's hold).
    assert stream.of("text_delta")
    assert stream.text == "[offline model] You said: Hello there, agent"
    assert stream.of("title") == [{**stream.of("title")[0], "title": "Hello there, agent"}]
    done = stream.done
    assert done["status"] == "success" and done["result"] == stream.text
    assert done["usage"] == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_5m_tokens": 0,
        "cache_creation_1h_tokens": 0,
        "cache_read_tokens": 0,
        "total_tokens": 120,
    }
    # Claude Sonnet 4.5: 100 x $3 + 20 x $15 per million tokens.
    assert done["cost_usd"] == "0.000600"
    context = stream.of("context_status")[0]
    assert context["current_context_tokens"] == 100 and context["max_context_tokens"] == 200000

    run = (await client.get(tenant.url(f"/runs/{_run_id(stream)}"), headers=tenant.headers)).json()
    assert run["status"] == "succeeded" and run["cost_usd"] == "0.000600"
    assert run["usage"]["total_tokens"] == 120 and run["session_id"] == done["session_id"]
    assert run["num_turns"] == 1 and run["finished_at"] and run["error"] is None
    messages = (
        await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
    ).json()
    assert [m["role"] for m in messages["items"]] == ["user", "assistant", "result"]
    assert messages["items"][0]["content"] == [{"type": "text", "text": "Hello there, agent"}]
    assert all(m["run_id"] == run["run_id"] for m in messages["items"])
    conversation = (
        await client.get(tenant.url(f"/conversations/{cid}"), headers=tenant.headers)
    ).json()
    assert conversation["title"] == "Hello there, agent"
    persisted = await _rows(
        app, "SELECT seq, type FROM run_events WHERE run_id = :r ORDER BY seq", r=run["run_id"]
    )
    assert [(r["seq"], r["type"]) for r in persisted] == [(d["seq"], e) for e, d in stream.events]
    transcript = await _rows(
        app,
        "SELECT count(*) AS n FROM sdk_session_entries WHERE session_id = :s",
        s=done["session_id"],
    )
    assert transcript[0]["n"] > 0


async def test_tool_call(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, tmp_path: Path
) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "Take notes scenario:tool")
    assert_well_formed(stream)
    (call,) = stream.of("tool_call")
    assert call["tool_name"] == "Write" and call["input"]["file_path"].endswith("/notes.md")
    (result,) = stream.of("tool_result")
    assert result["tool_use_id"] == call["tool_use_id"] and result["tool_name"] == "Write"
    assert result["is_error"] is False and "notes.md" in result["content"]
    assert stream.done["status"] == "success"
    workspace = workspace_dir(tmp_path / "data", tenant.tenant_id, cid)
    assert (workspace / "notes.md").read_text() == "Notes from the offline model.\n"
    (row,) = await _rows(app, "SELECT * FROM tool_calls WHERE run_id = :r", r=_run_id(stream))
    assert row["tool_use_id"] == call["tool_use_id"] and row["status"] == "succeeded"
    assert row["finished_at"] >= row["started_at"] and "notes.md" in row["output_preview"]
    roles = [
        r["role"]
        for r in await _rows(
            app, "SELECT role FROM messages WHERE conversation_id = :c ORDER BY seq", c=cid
        )
    ]
    assert roles == ["user", "assistant", "tool_result", "assistant", "result"]
    # Two model calls of 100 in / 20 out.
    assert (
        stream.done["usage"]["input_tokens"] == 200 and stream.done["usage"]["output_tokens"] == 40
    )


async def test_parallel_tool_calls(
    client: httpx.AsyncClient, tenant: TenantFixture, tmp_path: Path
) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:parallel")
    assert_well_formed(stream)
    kinds = [e for e, _ in stream.events]
    calls = [i for i, k in enumerate(kinds) if k == "tool_call"]
    results = [i for i, k in enumerate(kinds) if k == "tool_result"]
    assert len(calls) == 2 and len(results) == 2 and max(calls) < min(results)
    assert {r["tool_use_id"] for r in stream.of("tool_result")} == {
        c["tool_use_id"] for c in stream.of("tool_call")
    }
    workspace = workspace_dir(tmp_path / "data", tenant.tenant_id, cid)
    assert (workspace / "alpha.md").exists() and (workspace / "beta.md").exists()


async def test_subagent(client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:subagent")
    assert_well_formed(stream)
    (call,) = [c for c in stream.of("tool_call") if c["tool_name"] == "Agent"]
    agent_id = call["tool_use_id"]
    (start,) = stream.of("subagent_start")
    (end,) = stream.of("subagent_end")
    assert start["agent_id"] == end["agent_id"] == agent_id
    assert start["agent_type"] == "general-purpose" and end["status"] == "completed"
    sub_messages = [a for a in stream.of("assistant") if a.get("parent_agent_id") == agent_id]
    assert sub_messages and "Sub-agent report" in sub_messages[0]["content_blocks"][0]["text"]
    # The run waited for the turn the task notification started, and its answer is the result.
    assert stream.done["status"] == "success"
    assert stream.done["result"] == "[offline model] The background task has finished."
    rows = await _rows(
        app,
        "SELECT parent_tool_use_id FROM messages WHERE run_id = :r AND parent_tool_use_id IS NOT NULL",
        r=_run_id(stream),
    )
    assert rows and all(r["parent_tool_use_id"] == agent_id for r in rows)
    # Four model calls (main, sub-agent, main, notification turn), 100 in / 20 out each.
    assert (
        stream.done["usage"]["input_tokens"] == 400 and stream.done["usage"]["output_tokens"] == 80
    )

    # Nothing of that run leaks into the next one.
    second = await stream_turn(client, tenant, cid, "And now?")
    assert_well_formed(second)
    assert not second.of("subagent_end") and not second.of("subagent_start")
    assert second.text == "[offline model] You said: And now?"
    assert second.done["usage"]["input_tokens"] == 100


async def test_a_subagent_on_another_model_is_charged_at_its_prices(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """The sub-agent runs on Haiku: its calls are recorded and priced as Haiku's (the
    run counted once, on its own model), and a summary by model says so."""
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:subagent:haiku")
    bedrock = app.state.offline_model.requests[-1]["api"] == "bedrock"
    assert stream.done["status"] == "success"
    called = {r.get("model") or r["body"]["model"] for r in app.state.offline_model.requests}
    # The CLI's `haiku` names the catalog's Haiku (left to itself, this CLI release picks
    # a model the catalog does not have).
    assert {name.split(".")[-1] for name in called} == {
        "claude-haiku-4-5-20251001-v1:0" if bedrock else "claude-haiku-4-5-20251001",
        "claude-sonnet-4-5-20250929-v1:0" if bedrock else "claude-sonnet-4-5-20250929",
    }, called
    rows = await _rows(
        app,
        "SELECT model_id, pricing, counts_run, input_tokens, output_tokens, cost_usd, api_key_id"
        " FROM usage_records WHERE run_id = :r ORDER BY model_id",
        r=_run_id(stream),
    )
    # 100 in / 20 out a call. Haiku (1 and 5 per million): one call = 0.000200. Sonnet
    # (3 and 15): the other three = 0.001800.
    assert [(r["model_id"], r["counts_run"], r["input_tokens"], r["cost_usd"]) for r in rows] == [
        ("claude-haiku-4-5", False, 100, Decimal("0.000200")),
        ("claude-sonnet-4-5", True, 300, Decimal("0.001800")),
    ]
    assert {r["pricing"] for r in rows} <= {"exact", "family"}
    assert {str(r["api_key_id"]) for r in rows} == {tenant.key_id}
    assert stream.done["cost_usd"] == "0.002000"
    summary = await client.get(
        tenant.url("/usage/summary"), params={"group_by": "model,api_key"}, headers=tenant.headers
    )
    assert [
        (b["model_id"], b["api_key_id"], b["runs"], b["cost_usd"])
        for b in summary.json()["buckets"]
    ] == [
        ("claude-haiku-4-5", tenant.key_id, 0, "0.000200"),
        ("claude-sonnet-4-5", tenant.key_id, 1, "0.001800"),
    ]


async def test_cache_usage_and_cost_by_hand(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:cache")
    assert_well_formed(stream)
    usage = stream.done["usage"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (1000, 500)
    assert (
        usage["cache_creation_5m_tokens"],
        usage["cache_creation_1h_tokens"],
        usage["cache_read_tokens"],
    ) == (2000, 1000, 3000)
    # Sonnet 4.5 per million: 1000 x $3 + 500 x $15 + 2000 x $3.75 + 1000 x $6 + 3000 x $0.30
    # = 3000 + 7500 + 7500 + 6000 + 900 = 24,900 millionths of a dollar.
    assert stream.done["cost_usd"] == "0.024900"
    (row,) = await _rows(app, "SELECT * FROM usage_records WHERE run_id = :r", r=_run_id(stream))
    assert row["model_id"] == "claude-sonnet-4-5" and row["cost_usd"] == Decimal("0.024900")
    assert row["cache_creation_1h_tokens"] == 1000 and row["tenant_id"] == tenant.tenant_id


async def test_a_price_change_applies_from_its_time(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """A run is charged at the prices when it ran: doubling Sonnet's prices afterwards
    neither reprices it nor what its cache reads saved; the next run pays the new ones."""
    cid = await new_conversation(client, tenant)
    before = await stream_turn(client, tenant, cid, "scenario:cache")
    report = (await client.get(tenant.url("/cost-report"), headers=tenant.headers)).json()
    # 3,000 cache reads x (3.00 - 0.30) / 1e6; reads over all input: 3,000 / 7,000.
    assert report["cache"] == {
        "cache_read_tokens": 3000,
        "saved_usd": "0.008100",
        "hit_ratio": round(3000 / 7000, 6),
    }
    doubled = {
        "price_input": "6",
        "price_output": "30",
        "price_cache_write_5m": "7.5",
        "price_cache_write_1h": "12",
        "price_cache_read": "0.6",
    }
    changed = await client.put("/api/models/claude-sonnet-4-5", json=doubled, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    after = await stream_turn(client, tenant, cid, "scenario:cache")
    assert (before.done["cost_usd"], after.done["cost_usd"]) == ("0.024900", "0.049800")
    report = (await client.get(tenant.url("/cost-report"), headers=tenant.headers)).json()
    assert report["total_usd"] == "0.074700"
    assert report["cache"]["saved_usd"] == "0.024300"  # 0.0081 + 3,000 x 5.4 / 1e6


async def test_second_turn_resumes_the_session(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    first = await stream_turn(client, tenant, cid, "Remember the word pelican")
    second = await stream_turn(client, tenant, cid, "What was the word?")
    assert second.done["status"] == "success"
    assert second.done["session_id"] == first.done["session_id"]
    last_request = app.state.offline_model.requests[-1]["body"]
    history = str(last_request["messages"])
    assert (
        "Remember the word pelican" in history and "You said: Remember the word pelican" in history
    )
    messages = (
        await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
    ).json()
    assert [m["seq"] for m in messages["items"]] == list(range(1, 7))


async def test_model_failures_end_the_run_cleanly(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    expected = {
        "error:429": ("rate_limited", True),
        "error:529": ("overloaded", True),
        "error:500": ("model_error", False),
    }
    for scenario, (error_type, recoverable) in expected.items():
        cid = await new_conversation(client, tenant)
        stream = await stream_turn(client, tenant, cid, f"scenario:{scenario}")
        assert_well_formed(stream)
        (error,) = stream.of("error")
        assert error["error_type"] == error_type and error["recoverable"] is recoverable, error
        assert stream.done["status"] == "error"
        run = (
            await client.get(tenant.url(f"/runs/{_run_id(stream)}"), headers=tenant.headers)
        ).json()
        assert run["status"] == "failed" and run["error_type"] == error_type and run["error"]
        messages = (
            await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
        ).json()
        assert messages["items"][0]["role"] == "user"


async def test_dropped_stream(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:drop")
    assert_well_formed(stream)
    assert stream.done["status"] == "error" and stream.of("error")
    run = (await client.get(tenant.url(f"/runs/{_run_id(stream)}"), headers=tenant.headers)).json()
    assert run["status"] == "failed"


async def test_file_tools_stay_in_the_workspace(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:escape")
    (result,) = stream.of("tool_result")
    assert result["is_error"] is True and "workspace" in result["content"]
    assert not await asyncio.to_thread(Path(ESCAPE_PATH).exists)


async def test_bash_is_off_unless_enabled_and_sees_no_secrets(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    refused = await stream_turn(client, tenant, cid, "scenario:bash")
    (result,) = refused.of("tool_result")
    assert result["is_error"] is True and "Bash" in result["content"]  # not offered

    await client.put(tenant.url(), json={"settings": {"bash_enabled": True}}, headers=ADMIN)
    allowed = await stream_turn(client, tenant, cid, "scenario:bash")
    (result,) = allowed.of("tool_result")
    assert result["is_error"] is False and "CLAUDE_CONFIG_DIR=" in result["content"]
    for secret in (
        "DATABASE_URL",
        "ADMIN_API_KEYS",
        "SECRET_KEY",
        ADMIN["X-API-Key"],
        "postgresql",
    ):
        assert secret not in result["content"]


async def test_bad_input(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    url = tenant.url(f"/conversations/{cid}/stream")
    for body in (
        {"user_input": ""},
        {"user_input": "   "},
        {},
        {"user_input": "x", "tokens": {"bad name": "v"}},
    ):
        assert_error(await client.post(url, json=body, headers=tenant.headers), 422)
    too_long = "x" * (app.state.settings.max_user_input_chars + 1)
    assert_error(
        await client.post(url, json={"user_input": too_long}, headers=tenant.headers),
        422,
        "INPUT_TOO_LONG",
    )
    assert_error(
        await client.post(
            other_tenant.url(f"/conversations/{cid}/stream"),
            json={"user_input": "hi"},
            headers=other_tenant.headers,
        ),
        404,
    )
    assert_error(
        await client.post(
            tenant.url(f"/conversations/{uuid.uuid4()}/stream"),
            json={"user_input": "hi"},
            headers=tenant.headers,
        ),
        404,
    )

    await client.post(tenant.url(f"/conversations/{cid}/archive"), headers=tenant.headers)
    assert_error(
        await client.post(url, json={"user_input": "hi"}, headers=tenant.headers),
        409,
        "CONVERSATION_ARCHIVED",
    )

    deprecated = await new_conversation(client, tenant, model_id="claude-haiku-4-5")
    await client.patch(
        "/api/models/claude-haiku-4-5/status", json={"status": "deprecated"}, headers=ADMIN
    )
    response = await client.post(
        tenant.url(f"/conversations/{deprecated}/stream"),
        json={"user_input": "hi"},
        headers=tenant.headers,
    )
    assert_error(response, 422, "MODEL_DEPRECATED")
    assert (await _rows(app, "SELECT count(*) AS n FROM runs"))[0]["n"] == 0


async def test_one_run_at_a_time_per_conversation(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    first = asyncio.create_task(stream_turn(client, tenant, cid, "scenario:slow:300"))
    for _ in range(200):
        runs = await client.get(
            tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers
        )
        if runs.json()["total"]:
            break
        await asyncio.sleep(0.05)
    second = await client.post(
        tenant.url(f"/conversations/{cid}/stream"),
        json={"user_input": "me too"},
        headers=tenant.headers,
    )
    error = assert_error(second, 409, "RUN_IN_PROGRESS")
    stream = await first
    assert error["details"] == [{"run_id": _run_id(stream)}]
    assert stream.done["status"] == "success"


async def test_other_tenants_runs_are_404(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "hi")
    run_id = _run_id(stream)
    assert_error(
        await client.get(other_tenant.url(f"/runs/{run_id}"), headers=other_tenant.headers), 404
    )
    assert_error(await client.get(tenant.url(f"/runs/{run_id}"), headers=other_tenant.headers), 404)
    assert (
        await client.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)
    ).status_code == 200


async def test_skill_call(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "scenario:skill:report-writer")
    assert_well_formed(stream)
    (call,) = stream.of("tool_call")
    assert call["tool_name"] == "Skill" and call["input"] == {"skill": "report-writer"}
    (result,) = stream.of("tool_result")
    assert result["tool_use_id"] == call["tool_use_id"]
    # No skill of that name is installed yet: the tool says so, and the run still ends well.
    assert stream.done["status"] == "success"


async def test_cli_crash_ends_the_run_cleanly(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, tmp_path: Path
) -> None:
    crashing = tmp_path / "crashing-cli"
    crashing.write_text("#!/bin/sh\necho 'simulated crash' >&2\nexit 3\n")
    crashing.chmod(0o755)
    executor = app.state.executor
    agent = dataclasses.replace(executor.ctx.agent, launcher=crashing)
    executor.ctx = dataclasses.replace(executor.ctx, agent=agent)
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "Hello?")
    assert_well_formed(stream)
    (error,) = stream.of("error")
    assert error["error_type"] == "agent_error" and error["recoverable"] is False
    assert stream.done["status"] == "error"
    run = (await client.get(tenant.url(f"/runs/{_run_id(stream)}"), headers=tenant.headers)).json()
    assert run["status"] == "failed" and run["error_type"] == "agent_error"
    messages = (
        await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
    ).json()
    assert [m["role"] for m in messages["items"]] == ["user"]


async def test_metrics_say_what_ran(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    """/metrics: runs ended by status, tokens and cost by model, the queue's wait, events
    emitted, and the node's and the whole service's runs."""
    cid = await new_conversation(client, tenant)
    assert (await stream_turn(client, tenant, cid, "scenario:cache")).done["status"] == "success"
    # The run frees its slot just after its last event: the gauge follows within moments.
    for _ in range(100):
        text = (await client.get("/metrics")).text
        if "cmab_runs_running 0.0" in text:
            break
        await asyncio.sleep(0.05)
    for line in (
        'cmab_runs_ended_total{error_type="",status="succeeded"}',
        'cmab_tokens_total{kind="cache_read",model="claude-sonnet-4-5"}',
        'cmab_cost_usd_total{model="claude-sonnet-4-5"}',
        "cmab_run_queue_wait_seconds_count",
        "cmab_run_events_total",
        'cmab_cluster_runs{status="queued"} 0.0',
        "cmab_runs_running 0.0",
        "cmab_agent_processes",
        "cmab_stream_followers",
        'cmab_cluster_nodes{role="worker"} 1.0',
    ):
        assert line in text, line
