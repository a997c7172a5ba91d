"""Usage reports over seeded rows: every grouping, time zones at the day boundary, CSV,
exact totals, the cache's effect computed by hand, tool logs, and 404 across tenants."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import ADMIN, TenantFixture, assert_error

# claude-sonnet-4-5's catalog prices, per million tokens: input 3, cache read 0.30.
ROWS = [
    # (user, model, created_at UTC, input, output, cache write 5m, cache read, cost, and what
    # the reads saved at the prices charged: 9,000 x (3.00 - 0.30) / 1e6 and, for haiku,
    # 1,000 x (1.00 - 0.10) / 1e6)
    (
        "alice",
        "claude-sonnet-4-5",
        "2026-03-02T23:30:00Z",
        1000,
        100,
        0,
        9000,
        "0.012345",
        "0.0243",
    ),
    ("alice", "claude-sonnet-4-5", "2026-03-03T10:00:00Z", 2000, 200, 500, 0, "0.020001", "0"),
    ("bob", "claude-haiku-4-5", "2026-03-03T15:00:00Z", 500, 50, 0, 1000, "0.000777", "0.0009"),
]


async def _seed(client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture) -> dict[str, str]:
    created = await client.post(tenant.url("/conversations"), json={}, headers=tenant.headers)
    cid = uuid.UUID(created.json()["conversation_id"])
    async with app.state.engine.begin() as conn:
        run_ids = []
        for user, model, when, inp, out, write, read, cost, saved in ROWS:
            at = datetime.fromisoformat(when)
            run_id = await conn.scalar(
                text(
                    "INSERT INTO runs (run_id, tenant_id, conversation_id, user_id, model_id,"
                    " status, user_input, input_tokens, output_tokens, cache_creation_5m_tokens,"
                    " cache_creation_1h_tokens, cache_read_tokens, cost_usd, num_turns, created_at)"
                    " VALUES (gen_random_uuid(), :t, :c, :u, :m, 'succeeded', 'x', :i, :o, :w, 0,"
                    " :r, :cost, 1, :at) RETURNING run_id"
                ),
                {
                    "t": tenant.tenant_id,
                    "c": cid,
                    "u": user,
                    "m": model,
                    "i": inp,
                    "o": out,
                    "w": write,
                    "r": read,
                    "cost": Decimal(cost),
                    "at": at,
                },
            )
            run_ids.append(run_id)
            await conn.execute(
                text(
                    "INSERT INTO usage_records (id, tenant_id, user_id, conversation_id, run_id,"
                    " model_id, provider_model, input_tokens, output_tokens,"
                    " cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens,"
                    " cost_usd, cache_saved_usd, created_at, counts_run) VALUES (gen_random_uuid(),"
                    " :t, :u, :c, :run, :m, :m, :i, :o, :w, 0, :r, :cost, :saved, :at, true)"
                ),
                {
                    "t": tenant.tenant_id,
                    "u": user,
                    "c": cid,
                    "run": run_id,
                    "m": model,
                    "i": inp,
                    "o": out,
                    "w": write,
                    "r": read,
                    "cost": Decimal(cost),
                    "saved": Decimal(saved),
                    "at": at,
                },
            )
        await conn.execute(
            text(
                "INSERT INTO tool_calls (id, tenant_id, run_id, conversation_id, tool_use_id,"
                " name, input, is_error, status, started_at, finished_at) VALUES (gen_random_uuid(),"
                " :t, :run, :c, 'toolu_1', 'Read', '{}', false, 'succeeded',"
                " '2026-03-03T10:00:00Z', '2026-03-03T10:00:01.5Z')"
            ),
            {"t": tenant.tenant_id, "run": run_ids[0], "c": cid},
        )
    return {"conversation_id": str(cid), "run_id": str(run_ids[0])}


async def _summary(client: httpx.AsyncClient, tenant: TenantFixture, **params: str) -> Any:
    response = await client.get(tenant.url("/usage/summary"), params=params, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_days_follow_the_time_zone(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """23:30 UTC on 2 March is 3 March in Tokyo and still 2 March in New York."""
    await _seed(client, app, tenant)
    tokyo = await _summary(client, tenant, group_by="day", tz="Asia/Tokyo")
    assert [b["period_start"][:10] for b in tokyo["buckets"]] == ["2026-03-03", "2026-03-04"]
    assert [b["runs"] for b in tokyo["buckets"]] == [2, 1]
    assert tokyo["buckets"][0]["period_start"].endswith("+09:00")
    new_york = await _summary(client, tenant, group_by="day", tz="America/New_York")
    assert [b["period_start"][:10] for b in new_york["buckets"]] == ["2026-03-02", "2026-03-03"]
    assert [b["runs"] for b in new_york["buckets"]] == [1, 2]
    week = await _summary(client, tenant, group_by="week", tz="UTC")
    assert [b["period_start"][:10] for b in week["buckets"]] == ["2026-03-02"]  # a Monday
    for summary in (tokyo, new_york, week):
        assert summary["totals"]["cost_usd"] == "0.033123"
        assert sum(Decimal(b["cost_usd"]) for b in summary["buckets"]) == Decimal("0.033123")


async def test_groupings_csv_cost_report_and_tool_logs(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    ids = await _seed(client, app, tenant)
    by_model_user = await _summary(client, tenant, group_by="model,user")
    assert [(b["model_id"], b["user_id"], b["cost_usd"]) for b in by_model_user["buckets"]] == [
        ("claude-haiku-4-5", "bob", "0.000777"),
        ("claude-sonnet-4-5", "alice", "0.032346"),
    ]
    assert by_model_user["totals"]["cache_read_tokens"] == 10_000
    month = await _summary(client, tenant, group_by="user,month", tz="Europe/Paris")
    assert [(b["user_id"], b["period_start"][:7]) for b in month["buckets"]] == [
        ("alice", "2026-03"),
        ("bob", "2026-03"),
    ]
    alice = await _summary(client, tenant, group_by="model", user_id="alice")
    assert alice["totals"]["runs"] == 2

    response = await client.get(
        tenant.url("/usage"), headers={**tenant.headers, "Accept": "text/csv"}
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 3 and {r["cost_usd"] for r in rows} == {"0.012345", "0.020001", "0.000777"}
    page = await client.get(
        tenant.url("/usage"), params={"run_id": ids["run_id"]}, headers=tenant.headers
    )
    assert page.json()["total"] == 1

    report = (await client.get(tenant.url("/cost-report"), headers=tenant.headers)).json()
    assert report["total_usd"] == "0.033123"
    assert [(line["key"], line["cost_usd"]) for line in report["by_user"]] == [
        ("alice", "0.032346"),
        ("bob", "0.000777"),
    ]
    assert report["cache"]["saved_usd"] == "0.025200"  # 0.0243 + 0.0009
    assert report["cache"]["hit_ratio"] == round(10_000 / (3500 + 500 + 10_000), 6)

    logs = (await client.get(tenant.url("/tool-logs"), headers=tenant.headers)).json()
    assert [(t["name"], t["duration_ms"]) for t in logs["items"]] == [("Read", 1500)]


@pytest.mark.parametrize(
    "params",
    [
        {"group_by": "day,week"},
        {"group_by": "colour"},
        {"group_by": "model,,day"},
        {"group_by": " model"},
        {"tz": "Mars/Olympus"},
        {"tz": "+09:00"},
        {"from": "2026-03-01T00:00:00"},  # naive: no offset
        {"limt": "5"},  # not a parameter of this operation
    ],
)
async def test_bad_report_parameters_are_422(
    client: httpx.AsyncClient, tenant: TenantFixture, params: dict[str, str]
) -> None:
    response = await client.get(tenant.url("/usage/summary"), params=params, headers=tenant.headers)
    assert_error(response, 422)


async def test_reports_never_cross_tenants(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    await _seed(client, app, tenant)
    for path in ("/usage", "/usage/summary", "/cost-report", "/tool-logs"):
        response = await client.get(tenant.url(path), headers=other_tenant.headers)
        assert_error(response, 404, "NOT_FOUND")
    theirs = await client.get(other_tenant.url("/tool-logs"), headers=other_tenant.headers)
    assert theirs.json()["total"] == 0
    summary = await _summary(client, other_tenant)
    assert summary["totals"]["runs"] == 0 and summary["totals"]["cost_usd"] == "0.000000"
    assert_error(await client.get("/api/usage/summary", headers=tenant.headers), 403)
    everyone = await client.get("/api/usage/summary", params={"group_by": "tenant"}, headers=ADMIN)
    assert [(b["tenant_id"], b["runs"]) for b in everyone.json()["buckets"]] == [("acme", 3)]


async def test_the_rollup_answers_as_the_records_do(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """A period on the rollup's hour or quarter-hour buckets is read from the rollup; one
    a microsecond off them, from the records: both answer the same, in every grouping and
    in zones with half- and quarter-hour offsets. Deleting the conversation empties both."""
    ids = await _seed(client, app, tenant)
    on_hours = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}
    on_quarters = {**on_hours, "to": "2026-04-01T00:00:00+05:45"}
    off_buckets = {**on_hours, "from": "2026-03-01T00:00:00.000001Z"}
    for group_by in ("model", "hour", "model,day", "week", "month"):
        for tz in ("UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"):
            params = {"group_by": group_by, "tz": tz}
            records = await _summary(client, tenant, **params, **off_buckets)
            assert records["totals"]["cost_usd"] == "0.033123"
            for on_buckets in (on_hours, on_quarters):
                assert await _summary(client, tenant, **params, **on_buckets) == records
    on_report = await client.get(
        tenant.url("/cost-report"), params=on_hours, headers=tenant.headers
    )
    off_report = await client.get(
        tenant.url("/cost-report"), params=off_buckets, headers=tenant.headers
    )
    assert on_report.json() == off_report.json()
    async with app.state.engine.connect() as conn:
        rollups = await conn.execute(
            text(
                "SELECT model_id, records, runs, cost_usd FROM usage_rollups"
                " WHERE tenant_id = :t AND width_minutes = 60 ORDER BY bucket_start"
            ),
            {"t": tenant.tenant_id},
        )
        assert [tuple(r) for r in rollups] == [
            ("claude-sonnet-4-5", 1, 1, Decimal("0.012345")),
            ("claude-sonnet-4-5", 1, 1, Decimal("0.020001")),
            ("claude-haiku-4-5", 1, 1, Decimal("0.000777")),
        ]

    deleted = await client.delete(
        tenant.url(f"/conversations/{ids['conversation_id']}"), headers=tenant.headers
    )
    assert deleted.status_code == 204
    for params in (on_hours, on_quarters, off_buckets):
        empty = await _summary(client, tenant, group_by="model", **params)
        assert empty["buckets"] == [] and empty["totals"]["cost_usd"] == "0.000000"
    async with app.state.engine.connect() as conn:
        left = await conn.scalar(
            text("SELECT count(*) FROM usage_rollups WHERE tenant_id = :t"), {"t": tenant.tenant_id}
        )
    assert left == 0
