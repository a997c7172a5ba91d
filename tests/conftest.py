"""Test database and app fixtures.

The suite runs against a real PostgreSQL: TEST_DATABASE_URL when set (CI points it at
127.0.0.1:5432), otherwise an embedded PostgreSQL under .data/test-postgres. A fresh
database is made for the session and migrated with Alembic; after each test every
tenant-owned row is removed and the models catalog is put back as the migration seeded it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from alembic import command
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from app import db
from app.config import Settings, StorageSettings
from app.db import alembic_config, recreate_database, start_embedded_postgres, to_async_url
from app.main import create_app
from app.services.execute.spec import bundled_cli

ADMIN_KEY = "test-admin-key-0123456789abcdef0123456789"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def agent_cli_processes(since: float) -> list[psutil.Process]:
    """The bundled agent CLI's processes started since `since` (epoch seconds), wherever
    they ended up in the process tree."""
    cli = str(bundled_cli())
    found = []
    for process in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0] == cli and process.info["create_time"] >= since:
            found.append(process)
    return found


LEFTOVER_AGENTS = pytest.StashKey[int]()


@pytest.fixture(scope="session", autouse=True)
def no_agent_process_outlives_the_suite(request: pytest.FixtureRequest) -> Iterator[None]:
    """Counted at the end: every CLI process a test started has ended."""
    started = time.time() - 1
    yield
    leftovers = agent_cli_processes(started)
    for _ in range(50):  # a process told to end may take a moment
        if not leftovers:
            break
        time.sleep(0.1)
        leftovers = [p for p in leftovers if p.is_running() and p.status() != "zombie"]
    request.config.stash[LEFTOVER_AGENTS] = len(leftovers)
    assert not leftovers, [p.info["cmdline"] for p in leftovers]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if LEFTOVER_AGENTS in config.stash:
        count = config.stash[LEFTOVER_AGENTS]
        terminalreporter.write_line(f"Agent CLI processes left after the suite: {count}")


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """A PostgreSQL server to make test databases on."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield to_async_url(configured)
        return
    url, server = start_embedded_postgres(PROJECT_ROOT / ".data" / "test")
    try:
        yield url
    finally:
        server.cleanup()


def make_database(server_url: URL, name: str) -> URL:
    return asyncio.run(recreate_database(server_url, name))


def drop_database(server_url: URL, name: str) -> None:
    asyncio.run(db.drop_database(server_url, name))


async def _drop_abandoned_test_databases(server_url: URL) -> None:
    """Databases of earlier runs that were killed before their teardown."""
    engine = create_async_engine(server_url)
    try:
        async with engine.connect() as conn:
            names = (
                await conn.execute(
                    text("SELECT datname FROM pg_database WHERE datname LIKE 'cmab_test_%'")
                )
            ).scalars()
            abandoned = [n for n in names if not psutil.pid_exists(int(n.rsplit("_", 1)[1]))]
    finally:
        await engine.dispose()
    for name in abandoned:
        await db.drop_database(server_url, name)


@pytest.fixture(scope="session")
def database_url(server_url: URL) -> Iterator[URL]:
    asyncio.run(_drop_abandoned_test_databases(server_url))
    name = f"cmab_test_{os.getpid()}"
    url = make_database(server_url, name)
    command.upgrade(alembic_config(url), "head")
    asyncio.run(
        run_sql(
            url,
            "CREATE SCHEMA test_snapshot",
            "CREATE TABLE test_snapshot.models AS SELECT * FROM models",
        )
    )
    yield url
    drop_database(server_url, name)


async def run_sql(url: URL, *statements: str) -> None:
    """Run statements in one transaction on a short-lived engine."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def make_settings(database_url: URL, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": SecretStr(database_url.render_as_string(hide_password=False)),
        "db_auto_migrate": False,
        "admin_api_keys": [SecretStr(ADMIN_KEY)],
        "secret_key": SecretStr("test-secret-key"),
        "data_dir": tmp_path / "data",
        "db_pool_size": 5,
        "model_provider": "offline",
        # Failure scenarios fail at once instead of after the CLI's backoff.
        "model_max_retries": 0,
        # Agents as urgent as the service: a busy CI machine's other work must not starve
        # them (tests of priorities set these).
        "agent_nice": 0,
        "agent_answering_nice": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


async def reset_database(url: URL) -> None:
    await run_sql(
        url,
        "TRUNCATE tenants, models, sdk_session_entries, nodes, procrastinate_jobs,"
        " procrastinate_workers CASCADE",
        "INSERT INTO models SELECT * FROM test_snapshot.models",
    )


@pytest.fixture
async def app(database_url: URL, tmp_path: Path) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(database_url, tmp_path))
    async with application.router.lifespan_context(application):
        yield application
    await reset_database(database_url)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


ADMIN = {"X-API-Key": ADMIN_KEY}


@dataclass
class TenantFixture:
    tenant_id: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def url(self, path: str = "") -> str:
        return f"/api/tenants/{self.tenant_id}{path}"


async def create_tenant(
    client: httpx.AsyncClient, tenant_id: str | None = None, **body: Any
) -> TenantFixture:
    tenant_id = tenant_id or f"t-{uuid.uuid4().hex[:10]}"
    response = await client.post(
        "/api/tenants", json={"tenant_id": tenant_id, "name": tenant_id, **body}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    key = await client.post(
        f"/api/tenants/{tenant_id}/api-keys", json={"name": "test"}, headers=ADMIN
    )
    assert key.status_code == 201, key.text
    return TenantFixture(tenant_id, key.json()["key"], key.json()["id"])


@pytest.fixture
async def tenant(client: httpx.AsyncClient) -> TenantFixture:
    return await create_tenant(client, "acme")


@pytest.fixture
async def other_tenant(client: httpx.AsyncClient) -> TenantFixture:
    return await create_tenant(client, "globex")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is an error in the envelope, with this status (and code)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, error
    assert error["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    return error


def s3_storage(endpoint: str) -> StorageSettings:
    """Storage settings for a new bucket on the S3-protocol server at `endpoint`."""
    import boto3

    bucket = f"cmab-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return StorageSettings(
        backend="s3",
        bucket=bucket,
        prefix="service",
        endpoint_url=endpoint,
        access_key_id="test",
        secret_access_key=SecretStr("test"),
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-protocol server (moto's server mode) on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
