"""Listing conversations (page 1) for a tenant that owns 100,000 of them, beside 9 other
tenants of the same size, against a tenant that owns 100, measured in the same run.

Target: big / small <= 2.0.    Run: `make bench` or `uv run python -m bench.list_conversations`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path

import asyncpg
import httpx

from app.db import asyncpg_connect_args
from bench.common import (
    ADMIN_KEY,
    fresh_database,
    interleaved_medians,
    serve_in_process,
    server_url,
)

logging.getLogger("httpx").setLevel(logging.WARNING)

BIG = int(os.environ.get("BENCH_BIG_TENANT_ROWS", "100000"))
SMALL = 100
BIG_TENANTS = 10
REPEAT = int(os.environ.get("BENCH_REPEAT", "200"))
TARGET = 2.0


async def _seed(url_args: dict[str, object]) -> None:
    conn = await asyncpg.connect(**url_args)
    try:
        tenants = [(f"big-{i}", BIG) for i in range(BIG_TENANTS)] + [("small", SMALL)]
        for tenant_id, rows in tenants:
            await conn.execute(
                "INSERT INTO tenants (tenant_id, name, default_model_id, status, settings)"
                " VALUES ($1, $1, 'claude-sonnet-4-5', 'active', '{}')",
                tenant_id,
            )
            # Spread over a year and 50 users, so the order by updated_at does real work.
            await conn.execute(
                """
                INSERT INTO conversations (conversation_id, tenant_id, user_id, title, model_id,
                                           status, metadata, created_at, updated_at)
                SELECT gen_random_uuid(), $1, 'user-' || (n % 50), 'Conversation ' || n,
                       'claude-sonnet-4-5', CASE WHEN n % 10 = 0 THEN 'archived' ELSE 'active' END,
                       '{}', now() - (random() * interval '365 days'),
                       now() - (random() * interval '365 days')
                FROM generate_series(1, $2) AS n
                """,
                tenant_id,
                rows,
            )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def _key(client: httpx.AsyncClient, tenant_id: str) -> str:
    response = await client.post(
        f"/api/tenants/{tenant_id}/api-keys",
        json={"name": "bench"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    response.raise_for_status()
    return str(response.json()["key"])


async def main() -> None:
    server, stop = server_url()
    try:
        url = await fresh_database(server, "cmab_bench_list")
        print(f"seeding {BIG_TENANTS} tenants x {BIG:,} conversations + 1 tenant x {SMALL} ...")
        await _seed(asyncpg_connect_args(url))
        with tempfile.TemporaryDirectory() as data_dir:
            async with serve_in_process(url, Path(data_dir)) as client:
                big_key, small_key = await _key(client, "big-3"), await _key(client, "small")

                async def list_page(tenant_id: str, key: str) -> None:
                    response = await client.get(
                        f"/api/tenants/{tenant_id}/conversations", headers={"X-API-Key": key}
                    )
                    assert response.status_code == 200 and len(response.json()["items"]) == 50

                medians = await interleaved_medians(
                    {
                        "small": lambda: list_page("small", small_key),
                        "big": lambda: list_page("big-3", big_key),
                    },
                    repeat=REPEAT,
                )
                small, big = medians["small"], medians["big"]
        ratio = big / small
        print(
            f"list page 1, tenant with {SMALL:>7,} conversations: {small * 1000:7.2f} ms (median of {REPEAT})"
        )
        print(
            f"list page 1, tenant with {BIG:>7,} conversations: {big * 1000:7.2f} ms (median of {REPEAT})"
        )
        verdict = "OK" if ratio <= TARGET else "MISSED"
        print(f"ratio big/small: {ratio:.2f}  (target <= {TARGET})  {verdict}")
    finally:
        stop()


if __name__ == "__main__":
    asyncio.run(main())
