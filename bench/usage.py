"""Usage summaries at scale, measured in one run: 1,000,000 usage records over 10
tenants (one with 100,000, one with 1,000, the rest sharing what is left), then the
summary by day and model for a month, through the service:

- p50 and p95 latency for the tenant with 100,000 records    target p50 <= 50 ms
- the same for the tenant with 1,000                        target big/small <= 2

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
        await conn.execute(text("ANALYZE usage_records"))
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
                    params = {
                        "group_by": "model,day",
                        "tz": "Europe/Paris",
                        "from": "2026-03-01T00:00:00Z",
                        "to": "2026-04-01T00:00:00Z",
                    }
                    times: dict[str, list[float]] = {"t0": [], "t1": []}
                    for round_number in range(ROUNDS + 5):
                        for tenant in ("t0", "t1"):
                            began = time.perf_counter()
                            response = await http.get(
                                f"/api/tenants/{tenant}/usage/summary",
                                params=params,
                                headers={"X-API-Key": keys[tenant]},
                            )
                            response.raise_for_status()
                            if round_number >= 5:
                                times[tenant].append(time.perf_counter() - began)
            finally:
                service.terminate()
                service.wait(timeout=60)
        for tenant, count in (("t0", BIG), ("t1", SMALL)):
            values = sorted(times[tenant])
            p50 = statistics.median(values)
            p95 = values[int(len(values) * 0.95) - 1]
            print(
                f"summary by model and day, {count:>7} records: p50 {p50 * 1000:6.1f} ms, p95 {p95 * 1000:6.1f} ms"
            )
        big, small = statistics.median(times["t0"]), statistics.median(times["t1"])
        print(f"  p50 target <= 50 ms: {'OK' if big <= 0.05 else 'MISSED'}")
        print(
            f"  100,000 vs 1,000: {big / small:.2f} (target <= 2)  {'OK' if big / small <= 2 else 'MISSED'}"
        )
    finally:
        model.stop()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
