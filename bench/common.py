"""Shared bench plumbing: a scratch database on the configured PostgreSQL (or the
embedded one), the app served in-process, and timing helpers."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from pydantic import SecretStr
from sqlalchemy import URL

from app.config import Settings
from app.db import alembic_config, recreate_database, start_embedded_postgres, to_async_url
from app.main import create_app

ADMIN_KEY = "bench-admin-key-0123456789abcdef0123456789"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def server_url() -> tuple[URL, Callable[[], None]]:
    """BENCH_DATABASE_URL (or TEST_DATABASE_URL) when set, else the embedded PostgreSQL."""
    configured = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
    if configured:
        return to_async_url(configured), lambda: None
    url, server = start_embedded_postgres(PROJECT_ROOT / ".data" / "bench")
    return url, server.cleanup


async def fresh_database(server: URL, name: str) -> URL:
    url = await recreate_database(server, name)
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    return url


@asynccontextmanager
async def serve_in_process(url: URL, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=SecretStr(url.render_as_string(hide_password=False)),
        db_auto_migrate=False,
        admin_api_keys=[SecretStr(ADMIN_KEY)],
        secret_key=SecretStr("bench"),
        data_dir=data_dir,
        log_level="WARNING",
        model_provider="offline",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield client


async def interleaved_medians(
    calls: dict[str, Callable[[], Awaitable[Any]]], *, repeat: int, warmup: int = 10
) -> dict[str, float]:
    """Median seconds per call of each named call, run in turns so that drift (caches,
    autovacuum, the other core's load) falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for round_number in range(warmup + repeat):
        for name, call in calls.items():
            started = time.perf_counter()
            await call()
            if round_number >= warmup:
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}
