"""Every run test runs twice: the CLI talking the Anthropic wire format, and Bedrock's;
each through a real Uvicorn server, so streams and disconnects are real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import URL

from app.main import create_app
from tests.conftest import make_settings, reset_database
from tests.integration.live_server import serve_in_loop


@pytest.fixture(params=["anthropic", "bedrock"])
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def app(database_url: URL, tmp_path: Path, wire: str) -> AsyncIterator[FastAPI]:
    application = create_app(
        make_settings(database_url, tmp_path, offline_model_wire=wire, shutdown_timeout=30)
    )
    async with application.router.lifespan_context(application):
        yield application
    await reset_database(database_url)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_in_loop(app) as url, httpx.AsyncClient(base_url=url) as http:
        yield http
