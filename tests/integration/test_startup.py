"""Start-up: migrations run on start; readiness reflects the schema and the database."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
from alembic import command
from pydantic import SecretStr
from sqlalchemy import URL

from app.db import alembic_config
from app.main import create_app
from tests.conftest import ADMIN, assert_error, drop_database, make_database, make_settings


async def _get(
    app_settings_url: URL, tmp_path: Path, path: str, **overrides: object
) -> httpx.Response:
    app = create_app(make_settings(app_settings_url, tmp_path, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path, headers=ADMIN)


async def test_start_migrates_a_fresh_database_and_restarts_cleanly(
    server_url: URL, tmp_path: Path
) -> None:
    name = f"cmab_start_{os.getpid()}"
    url = await asyncio.to_thread(make_database, server_url, name)
    try:
        not_migrated = await _get(url, tmp_path, "/health/ready")
        assert_error(not_migrated, 503, "SERVICE_UNAVAILABLE")
        assert (await _get(url, tmp_path, "/health")).json()["schema_revision"] is None

        migrated = await _get(url, tmp_path, "/health/ready", db_auto_migrate=True)
        assert migrated.status_code == 200
        models = await _get(url, tmp_path, "/api/models", db_auto_migrate=True)
        assert models.json()["total"] >= 5
    finally:
        await asyncio.to_thread(drop_database, server_url, name)


async def test_unreachable_database_is_503(tmp_path: Path) -> None:
    unreachable = URL.create(
        "postgresql+asyncpg", username="nobody", host="127.0.0.1", port=1, database="x"
    )
    app = create_app(make_settings(unreachable, tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert_error(await client.get("/health"), 503, "SERVICE_UNAVAILABLE")
            assert_error(await client.get("/health/ready"), 503)
            assert (await client.get("/health/live")).status_code == 200
            # A request that needs the database fails cleanly too.
            error = assert_error(
                await client.get("/api/models", headers={"X-API-Key": "cmab_" + "x" * 43}), 503
            )
            assert "password" not in error["message"] and "nobody" not in error["message"]


def test_database_url_password_is_never_logged(tmp_path: Path) -> None:
    settings = make_settings(
        URL.create("postgresql+asyncpg", password="s3cret", host="h", database="d"), tmp_path
    )
    assert settings.database_url is not None
    assert isinstance(settings.database_url, SecretStr)
    assert "s3cret" not in str(settings.model_dump())


def test_migrations_go_down_and_up_again(server_url: URL) -> None:
    name = f"cmab_roundtrip_{os.getpid()}"
    url = make_database(server_url, name)
    try:
        config = alembic_config(url)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")
    finally:
        drop_database(server_url, name)
