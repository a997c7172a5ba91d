"""Budgets: a run over the tenant's or a user's monthly budget is refused before
anything runs (the model is never called), counted in the tenant's time zone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.services.budgets import month_of
from tests.conftest import ADMIN, TenantFixture, assert_error
from tests.integration.execute.streams import hostile, new_conversation, stream_turn


@pytest.fixture
def wire() -> str:
    return "anthropic"


async def _spend(app: FastAPI, tenant: TenantFixture, cid: str, user: str, cost: str) -> None:
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO runs (run_id, tenant_id, conversation_id, user_id, model_id, status,"
                " user_input, input_tokens, output_tokens, cache_creation_5m_tokens,"
                " cache_creation_1h_tokens, cache_read_tokens, cost_usd, num_turns)"
                " VALUES (gen_random_uuid(), :t, :c, :u, 'claude-sonnet-4-5', 'succeeded', 'x',"
                " 0, 0, 0, 0, 0, :cost, 1)"
            ),
            {"t": tenant.tenant_id, "c": cid, "u": user, "cost": Decimal(cost)},
        )


async def test_budgets_refuse_runs_before_they_start(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    settings = {
        "monthly_budget_usd": "1.00",
        "user_budgets": {"alice": "0.10"},
        "time_zone": "Asia/Tokyo",
    }
    updated = await client.put(tenant.url(), json={"settings": settings}, headers=ADMIN)
    assert updated.status_code == 200, updated.text
    cid = await new_conversation(client, tenant)
    await _spend(app, tenant, cid, "alice", "0.10")
    alice = {"executor": {"user_id": "alice"}}
    app.state.offline_model.requests.clear()
    refused = await stream_turn(client, tenant, cid, "hello", **alice)
    assert refused.status_code == 429
    error = refused.events[0][1]["error"]
    assert error["code"] == "BUDGET_EXCEEDED" and error["details"][0]["budget"] == "user"
    assert error["details"][0]["limit_usd"] == "0.10"
    assert len(app.state.offline_model.requests) == 0  # the model was never called
    bob = await stream_turn(client, tenant, cid, "hello", executor={"user_id": "bob"})
    assert bob.done["status"] == "success"

    await _spend(app, tenant, cid, "carol", "0.95")
    tenant_wide = await stream_turn(client, tenant, cid, "hello", executor={"user_id": "bob"})
    assert tenant_wide.status_code == 429
    error = tenant_wide.events[0][1]["error"]
    assert error["details"][0]["budget"] == "tenant"
    assert "0.95" not in error["message"] and "carol" not in error["message"]

    state = await client.get(
        tenant.url("/budget"), params={"user_id": "alice"}, headers=tenant.headers
    )
    body = state.json()
    expected = month_of("Asia/Tokyo", datetime.now(UTC))
    assert body["time_zone"] == "Asia/Tokyo"
    assert datetime.fromisoformat(body["period_start"]) == expected.start
    lines = {line["budget"]: line for line in body["budgets"]}
    assert lines["user"]["spent_usd"] == "0.100000" and lines["user"]["remaining_usd"] == "0.000000"
    assert Decimal(lines["tenant"]["spent_usd"]) >= Decimal("1.05")


def test_the_month_follows_the_tenants_time_zone() -> None:
    # 31 Jan 20:00 UTC is already 1 Feb in Tokyo: February's budget, resetting 1 Mar.
    period = month_of("Asia/Tokyo", datetime(2026, 1, 31, 20, 0, tzinfo=UTC))
    assert period.start == datetime(2026, 1, 31, 15, 0, tzinfo=UTC)
    assert period.resets_at == datetime(2026, 2, 28, 15, 0, tzinfo=UTC)
    december = month_of("America/New_York", datetime(2026, 12, 15, tzinfo=UTC))
    assert december.resets_at == datetime(2027, 1, 1, 5, 0, tzinfo=UTC)


async def test_bad_budget_settings_are_422(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    for settings in ({"time_zone": "+09:00"}, {"user_budgets": {"alice": "-1"}}):
        response = await client.put(tenant.url(), json={"settings": settings}, headers=ADMIN)
        assert_error(response, 422)


async def test_a_run_that_crosses_80_percent_warns(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"settings": {"monthly_budget_usd": "0.01"}}, headers=ADMIN)
    cid = await new_conversation(client, tenant)
    await _spend(app, tenant, cid, "carol", "0.0075")
    stream = await stream_turn(client, tenant, cid, "hello")  # costs 0.0012
    kinds = [kind for kind, _ in stream.events]
    (warning,) = stream.of("budget_warning")
    assert warning["budget"] == "tenant" and warning["limit_usd"] == "0.01"
    assert kinds.index("budget_warning") < kinds.index("done")
    quiet = await stream_turn(client, tenant, cid, "hello")  # already past 80 %: no repeat
    assert quiet.of("budget_warning") == []


async def test_a_run_stops_at_its_cap_or_the_budget_left(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """Each model call of the scripted model costs 0.0006 USD: a run capped at 0.001
    stops after its second call, its usage so far recorded and charged."""
    cid = await new_conversation(client, tenant)
    ws = f"{app.state.settings.data_dir.resolve()}/workspaces/{tenant.tenant_id}/{cid}"
    calls = [["Write", {"file_path": f"{ws}/f{n}.txt", "content": "x"}] for n in range(4)]
    app.state.offline_model.requests.clear()
    capped = await stream_turn(client, tenant, cid, hostile(*calls), max_cost_usd="0.001")
    (error,) = capped.of("error")
    assert error["error_type"] == "budget_exceeded" and "0.001" in error["message"]
    assert capped.done["status"] == "error"
    assert len(app.state.offline_model.requests) <= 3  # not the five a full run makes
    run = (
        await client.get(tenant.url(f"/runs/{capped.done['run_id']}"), headers=tenant.headers)
    ).json()
    assert run["error_type"] == "budget_exceeded" and Decimal(run["cost_usd"]) > 0

    # The budget's remainder caps a run the same way.
    await client.put(tenant.url(), json={"settings": {"monthly_budget_usd": "0.01"}}, headers=ADMIN)
    spent = Decimal(run["cost_usd"])
    await _spend(app, tenant, cid, "carol", str(Decimal("0.0095") - spent))
    left = await stream_turn(client, tenant, cid, hostile(*calls))
    assert [e["error_type"] for e in left.of("error")] == ["budget_exceeded"]


async def test_runs_racing_for_a_budget_cannot_all_pass(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """A budget of 3.00 USD, each run holding 1.00 while queued or running: of 20 runs
    started at once, 3 go and 17 are refused."""
    settings = {
        "monthly_budget_usd": "3.00",
        "run_reservation_usd": "1.00",
        "max_concurrent_runs": 20,
    }
    await client.put(tenant.url(), json={"settings": settings}, headers=ADMIN)
    conversations = [await new_conversation(client, tenant) for _ in range(20)]

    async def start(cid: str) -> int:
        response = await client.post(
            tenant.url(f"/conversations/{cid}/stream"),
            json={"user_input": "scenario:slow:300"},
            headers=tenant.headers,
            timeout=60,
        )
        return response.status_code

    statuses = await asyncio.gather(*(start(cid) for cid in conversations))
    assert sorted(statuses) == [200] * 3 + [429] * 17, statuses
    budget = (await client.get(tenant.url("/budget"), headers=tenant.headers)).json()
    (line,) = budget["budgets"]
    assert Decimal(line["spent_usd"]) < Decimal("0.1")  # reconciled: the real costs
