"""Start-up: migrations run on start; readiness reflects the schema and the database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import httpx
from alembic import command
from sqlalchemy import URL

from app.db import alembic_config
from app.main import create_app
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    assert_error,
    drop_database,
    make_database,
    make_settings,
    reset_database,
)
from tests.integration.live_server import spawn_service


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


def test_secrets_stay_out_of_the_logs(database_url: URL, tmp_path: Path) -> None:
    """The real service, as `python -m app`: its whole output holds no password, admin
    key or tenant key, while it serves requests that carry them."""
    # Trust auth ignores the password, so the service starts with one in its URL.
    with_password = database_url.set(password="s3cret-db-password")
    settings = {
        "DATABASE_URL": with_password.render_as_string(hide_password=False),
        "DB_AUTO_MIGRATE": "false",
        "ADMIN_API_KEYS": ADMIN_KEY,
        "DATA_DIR": str(tmp_path),
    }
    service, base = spawn_service(
        settings, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        with httpx.Client(base_url=base, headers=ADMIN) as http:
            http.post("/api/tenants", json={"tenant_id": "acme", "name": "A"}).raise_for_status()
            key = http.post("/api/tenants/acme/api-keys", json={"name": "k"}).json()["key"]
            assert http.get("/api/models", headers={"X-API-Key": key}).status_code == 200
            assert http.get("/api/models", headers={"X-API-Key": key + "x"}).status_code == 401
            assert (
                http.post("/api/tenants", json={"tenant_id": "acme", "name": "A"}).status_code
                == 409
            )
    finally:
        service.send_signal(signal.SIGINT)
        output, _ = service.communicate(timeout=30)
        asyncio.run(reset_database(database_url))
    assert "service_started" in output and "http_request" in output
    for secret in ("s3cret-db-password", key, ADMIN_KEY):
        assert secret not in output


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
