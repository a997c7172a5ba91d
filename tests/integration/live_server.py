"""A real Uvicorn server on a free loopback port, for tests that need real HTTP: in a
thread of its own (with the app's lifespan), or in the test's own event loop (serving
an app whose lifespan the test already runs, so the test can reach its state)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from app.utils.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serve(app: FastAPI, *, startup_timeout: float = 30.0) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@asynccontextmanager
async def serve_in_loop(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` from this event loop until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=10,
        )
    )
    task = asyncio.create_task(server.serve(), name=f"uvicorn-{port}")
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the test server did not start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def spawn_service(
    settings: dict[str, str], *, cwd: Path = PROJECT_ROOT, **popen: Any
) -> tuple[subprocess.Popen[Any], str]:
    """The real service, `python -m app`, on a free port with these settings (environment
    variables) and nothing else of this environment but PATH; returns it once ready,
    with its base URL."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(PROJECT_ROOT),
        "PORT": str(port),
        **settings,
    }
    service = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=cwd, **popen)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while service.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/ready").status_code == 200:
                return service, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    service.kill()
    raise RuntimeError("the service did not start")
