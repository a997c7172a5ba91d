"""Many nodes: three service processes on one PostgreSQL and one S3 server, each with its
own data directory. A run is followed and cancelled from any node; a node killed with
SIGKILL has its runs interrupted by the others within the configured time, and the
conversation goes on elsewhere with its history and files; a restarting node leaves the
others' runs alone; a tenant's run limit holds across the nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from sqlalchemy import URL

from tests.conftest import (
    ADMIN_KEY,
    TenantFixture,
    create_tenant,
    reset_database,
    s3_storage,
)
from tests.integration.execute.streams import Event, follow, new_conversation, stream_turn
from tests.integration.live_server import spawn_service

HEARTBEAT, TIMEOUT = 0.5, 3.0


@dataclass
class Node:
    name: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[Any] | None = None
    base: str = ""
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def start(self) -> None:
        self.process, self.base = spawn_service({**self.env, "DATA_DIR": str(self.data_dir)})

    def client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.base, timeout=60)
        self.clients.append(client)
        return client

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
            self.process.wait(timeout=60)


@contextlib.asynccontextmanager
async def nodes(
    database_url: URL, s3_endpoint: str, tmp_path: Path, **extra: str
) -> AsyncIterator[list[Node]]:
    storage = s3_storage(s3_endpoint)
    env = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "DB_AUTO_MIGRATE": "false",
        "ADMIN_API_KEYS": ADMIN_KEY,
        "MODEL_PROVIDER": "offline",
        "LOG_LEVEL": "WARNING",
        "NODE_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "NODE_TIMEOUT_SECONDS": str(TIMEOUT),
        "STORAGE__BACKEND": "s3",
        "STORAGE__BUCKET": storage.bucket,
        "STORAGE__PREFIX": storage.prefix,
        "STORAGE__ENDPOINT_URL": str(storage.endpoint_url),
        "STORAGE__ACCESS_KEY_ID": "test",
        "STORAGE__SECRET_ACCESS_KEY": "test",
        **extra,
    }
    group = [Node(name, tmp_path / name, env) for name in ("a", "b", "c")]
    try:
        for node in group:
            node.data_dir.mkdir()
            node.start()
        yield group
    finally:
        for node in group:
            for client in node.clients:
                await client.aclose()
            node.stop()


@contextlib.asynccontextmanager
async def streaming(
    client: httpx.AsyncClient, tenant: TenantFixture, cid: str, user_input: str
) -> AsyncIterator[tuple[str, asyncio.Task[list[Event]]]]:
    """A turn started through `client`, read in the background: its run id, and the task
    that reads its events to the end."""
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read() -> list[Event]:
        events: list[Event] = []
        async with aconnect_sse(
            client,
            "POST",
            tenant.url(f"/conversations/{cid}/stream"),
            json={"user_input": user_input},
            headers=tenant.headers,
            timeout=120,
        ) as source:
            started.set_result(source.response.headers["x-run-id"])
            async for sse in source.aiter_sse():
                if sse.event != "ping":
                    events.append((sse.event, json.loads(sse.data)))
        return events

    task = asyncio.create_task(read())
    try:
        yield await asyncio.wait_for(asyncio.shield(started), 60), task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def until_status(
    client: httpx.AsyncClient, tenant: TenantFixture, run_id: str, *statuses: str
) -> dict[str, Any]:
    for _ in range(600):
        run = (await client.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)).json()
        if run["status"] in statuses:
            return dict(run)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the run never reached {statuses}")


async def test_runs_are_followed_cancelled_and_recovered_across_nodes(
    database_url: URL, s3_endpoint: str, tmp_path: Path
) -> None:
    try:
        async with nodes(database_url, s3_endpoint, tmp_path) as (a, b, c):
            ca, cb, cc = a.client(), b.client(), c.client()
            tenant = await create_tenant(ca, "acme")
            cid = await new_conversation(ca, tenant)

            # Followed from every node: B and C re-attach from seq 2 with Last-Event-ID
            # and see what A streams, exactly as stored.
            async with streaming(ca, tenant, cid, "scenario:slow:150") as (run_id, on_a):
                run = await until_status(cb, tenant, run_id, "running", "succeeded")
                followers = [follow(x, tenant, run_id, 2) for x in (cb, cc)]
                on_b, on_c = await asyncio.gather(*followers)
                streamed = await on_a
            assert run["node_id"] and streamed[-1][0] == "done"
            stored = await follow(cc, tenant, run_id, 0)
            assert streamed == stored
            assert on_b == on_c == stored[2:]

            # Cancelled through C, stopped by its owner A.
            async with streaming(ca, tenant, cid, "scenario:slow:2000") as (run_id, on_a):
                await until_status(cc, tenant, run_id, "running")
                cancelled = await cc.post(
                    tenant.url(f"/runs/{run_id}/cancel"), headers=tenant.headers
                )
                assert cancelled.status_code == 200, cancelled.text
                assert cancelled.json()["status"] == "cancelled"
                events = await on_a
            assert events[-1][0] == "done" and events[-1][1]["status"] == "cancelled"

            # A file for the next turn to find, wherever it runs.
            assert (await stream_turn(ca, tenant, cid, "scenario:tool")).done["status"] == "success"

            # A is killed mid-run: B's follower gets `error` and `done` within the timeout.
            async with streaming(ca, tenant, cid, "scenario:slow:3000") as (run_id, _):
                await until_status(cb, tenant, run_id, "running")
                follower = asyncio.create_task(follow(cb, tenant, run_id, 0))
                await asyncio.sleep(0.5)
                killed_at = time.monotonic()
                a.stop(kill=True)
                events = await asyncio.wait_for(follower, 30)
                waited = time.monotonic() - killed_at
            assert [kind for kind, _ in events[-2:]] == ["error", "done"]
            assert events[-2][1]["error_type"] == "interrupted"
            assert waited <= TIMEOUT + 3 * HEARTBEAT + 1.0, waited
            run = await until_status(cc, tenant, run_id, "interrupted")

            # The next turn runs on another node with its history and its files.
            following = await stream_turn(cb, tenant, cid, "What did you write?")
            assert following.done["status"] == "success"
            last = (
                await cb.get(
                    tenant.url(f"/runs/{following.done['run_id']}"), headers=tenant.headers
                )
            ).json()
            assert last["node_id"] != run["node_id"]
            owner = b if (b.data_dir / "node-id").read_text().strip() == last["node_id"] else c
            workspace = owner.data_dir / "workspaces" / tenant.tenant_id / cid
            assert (workspace / "notes.md").read_text().startswith("Notes from the offline model")

            # Restarting B leaves C's run alone.
            cid2 = await new_conversation(cc, tenant)
            async with streaming(cc, tenant, cid2, "scenario:slow:400") as (run_id, on_c):
                await until_status(cc, tenant, run_id, "running")
                b.stop()
                b.start()
                events = await on_c
            assert events[-1][1]["status"] == "success"
    finally:
        await reset_database(database_url)
