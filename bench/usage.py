"""Usage summaries at scale, measured in one run: 1,000,000 usage records over 10
tenants (one with 100,000, one with 1,000, the rest sharing what is left), then the
summary by day and model for a month, through the service:

- p50 and p95 latency for the tenant with 100,000 records    target p50 <= 50 ms
- the same for the tenant with 1,000                        target big/small <= 2

in Europe/Paris (read from the rollup's hour buckets), and for comparison in
Asia/Kolkata (its quarter-hour buckets) and from the records themselves (a period that
does not start on a bucket).

Run: `uv run python -m bench.usage`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.services.execute.offline_model import OfflineModelServer
from bench.common import ADMIN_KEY, fresh_database, server_url
from bench.runs import start_service

TOTAL = int(os.environ.get("BENCH_RECORDS", "1000000"))
BIG, SMALL = 100_000, 1_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "40"))
TENANTS = 10


async def seed(url: str, keys: dict[str, str]) -> None:
    """Each tenant's records spread over March 2026, on 4 models and 50 users."""
    counts = {"t0": BIG, "t1": SMALL}
    rest = (TOTAL - BIG - SMALL) // (TENANTS - 2)
    counts.update({f"t{n}": rest for n in range(2, TENANTS)})
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for tenant, count in counts.items():
            cid = await conn.scalar(
                text(
                    "INSERT INTO conversations (conversation_id, tenant_id, model_id, status,"
                    " metadata) VALUES (gen_random_uuid(), :t, 'claude-sonnet-4-5', 'active',"
                    " '{}') RETURNING conversation_id"
                ),
                {"t": tenant},
            )
            run_id = await conn.scalar(
                text(
                    "INSERT INTO runs (run_id, tenant_id, conversation_id, model_id, status,"
                    " user_input, input_tokens, output_tokens, cache_creation_5m_tokens,"
                    " cache_creation_1h_tokens, cache_read_tokens, cost_usd, num_turns)"
                    " VALUES (gen_random_uuid(), :t, :c, 'claude-sonnet-4-5', 'succeeded', 'x',"
                    " 0, 0, 0, 0, 0, 0, 1) RETURNING run_id"
                ),
                {"t": tenant, "c": cid},
            )
            await conn.execute(
                text(
                    "INSERT INTO usage_records (id, tenant_id, user_id, conversation_id, run_id,"
                    " model_id, provider_model, input_tokens, output_tokens,"
                    " cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens,"
                    " cost_usd, created_at, counts_run)"
                    " SELECT gen_random_uuid(), :t, 'user' || (n % 50), :c, :r,"
                    " (ARRAY['claude-sonnet-4-5','claude-haiku-4-5','claude-opus-4-1',"
                    "'claude-sonnet-4'])[1 + n % 4], 'm', 100 + n % 900, 20 + n % 80, n % 7,"
                    " 0, n % 1000, (n % 1000) / 100000.0,"
                    " timestamptz '2026-03-01' + (n::bigint * 2678399 / :count) * interval '1 second',"
                    " true"
                    " FROM generate_series(1, :count) AS n"
                ),
                {"t": tenant, "c": cid, "r": run_id, "count": count},
            )
        # As autovacuum would, after so many rows: the planner needs their statistics.
        await conn.execute(text("ANALYZE usage_records"))
        await conn.execute(text("ANALYZE usage_rollups"))
    await engine.dispose()
    del keys


async def main() -> None:
    server, stop_server = server_url()
    model = OfflineModelServer()
    model.start()
    try:
        url = await fresh_database(server, "cmab_bench_usage")
        raw = url.render_as_string(hide_password=False)
        with tempfile.TemporaryDirectory() as scratch:
            service, base = start_service(raw, model.url, Path(scratch) / "data")
            try:
                async with httpx.AsyncClient(base_url=base, timeout=120) as http:
                    admin = {"X-API-Key": ADMIN_KEY}
                    keys = {}
                    for n in range(TENANTS):
                        body = {"tenant_id": f"t{n}", "name": f"T{n}"}
                        (
                            await http.post("/api/tenants", json=body, headers=admin)
                        ).raise_for_status()
                        key = await http.post(
                            f"/api/tenants/t{n}/api-keys", json={"name": "b"}, headers=admin
                        )
                        keys[f"t{n}"] = key.json()["key"]
                    started = time.perf_counter()
                    await seed(raw, keys)
                    print(f"seeded {TOTAL} usage records in {time.perf_counter() - started:.1f} s")
                    month = {"from": "2026-03-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}
                    cases = {
                        "hour buckets (Europe/Paris)": {**month, "tz": "Europe/Paris"},
                        "quarter hours (Asia/Kolkata)": {**month, "tz": "Asia/Kolkata"},
                        "records (Europe/Paris)": {
                            **month,
                            "tz": "Europe/Paris",
                            "from": "2026-03-01T00:00:00.000001Z",
                        },
                    }
                    times = {(case, tenant): [] for case in cases for tenant in ("t0", "t1")}
                    for round_number in range(ROUNDS + 5):
                        for (case, tenant), spent in times.items():
                            began = time.perf_counter()
                            response = await http.get(
                                f"/api/tenants/{tenant}/usage/summary",
                                params={"group_by": "model,day", **cases[case]},
                                headers={"X-API-Key": keys[tenant]},
                            )
                            response.raise_for_status()
                            if round_number >= 5:
                                spent.append(time.perf_counter() - began)
            finally:
                service.terminate()
                service.wait(timeout=60)
        print("summary by model and day over a month, through the service:")
        for case in cases:
            for tenant, count in (("t0", BIG), ("t1", SMALL)):
                values = sorted(times[case, tenant])
                p50, p95 = statistics.median(values), values[int(len(values) * 0.95) - 1]
                print(
                    f"  {case:<30} {count:>7} records: p50 {p50 * 1000:6.1f} ms,"
                    f" p95 {p95 * 1000:6.1f} ms"
                )
            big = statistics.median(times[case, "t0"])
            small = statistics.median(times[case, "t1"])
            print(f"  {'':<30} 100,000 vs 1,000: {big / small:.2f}")
        target = next(iter(cases))
        big = statistics.median(times[target, "t0"])
        ratio = big / statistics.median(times[target, "t1"])
        print(
            f"{target}: p50 {big * 1000:.1f} ms (target <= 50): {'OK' if big <= 0.05 else 'MISSED'}"
        )
        print(
            f"{target}: 100,000 vs 1,000 {ratio:.2f} (target <= 2): {'OK' if ratio <= 2 else 'MISSED'}"
        )
    finally:
        model.stop()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
