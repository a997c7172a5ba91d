"""Many nodes: three service processes on one PostgreSQL and one S3 server, each with its
own data directory. A run is followed and cancelled from any node; a node killed with
SIGKILL has its runs interrupted by the others within the configured time, and the
conversation goes on elsewhere with its history and files; a restarting node leaves the
others' runs alone; a tenant's run limit holds across the nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from httpx_sse import aconnect_sse
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import (
    ADMIN_KEY,
    TenantFixture,
    create_tenant,
    reset_database,
    s3_storage,
)
from tests.integration.execute.streams import Event, follow, new_conversation, stream_turn
from tests.integration.live_server import PROJECT_ROOT, spawn_service

# Short for a test, but with room for a busy 2-core machine to start agent processes.
HEARTBEAT, TIMEOUT = 0.5, 6.0


@dataclass
class Node:
    name: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[Any] | None = None
    base: str = ""
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    async def start(self) -> None:
        env = {**self.env, "DATA_DIR": str(self.data_dir)}
        self.process, self.base = await asyncio.to_thread(spawn_service, env)

    def client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.base, timeout=60)
        self.clients.append(client)
        return client

    @property
    def node_id(self) -> str:
        return (self.data_dir / "node-id").read_text().strip()

    async def stop(self, *, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
            await asyncio.to_thread(self.process.wait, 60)


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
        # Shared by every node: what a run carries to its worker is sealed with it.
        "SECRET_KEY": "s" * 40,
        **extra,
    }
    group = [Node(name, tmp_path / name, env) for name in ("a", "b", "c")]
    try:
        for node in group:
            node.data_dir.mkdir()
            await node.start()
        yield group
    finally:
        for node in group:
            for client in node.clients:
                await client.aclose()
            await node.stop()


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
        with contextlib.suppress(BaseException):  # its node may have been killed
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

            # Cancelled through C, stopped by its owner: the node that ran the turn before,
            # which holds the conversation's warm session.
            async with streaming(ca, tenant, cid, "scenario:slow:2000") as (run_id, on_a):
                second = await until_status(cc, tenant, run_id, "running")
                assert second["node_id"] == run["node_id"]
                cancelled = await cc.post(
                    tenant.url(f"/runs/{run_id}/cancel"), headers=tenant.headers
                )
                assert cancelled.status_code == 200, cancelled.text
                assert cancelled.json()["status"] == "cancelled"
                events = await on_a
            assert events[-1][0] == "done" and events[-1][1]["status"] == "cancelled"

            # A file for the next turn to find, wherever it runs.
            assert (await stream_turn(ca, tenant, cid, "scenario:tool")).done["status"] == "success"

            # The run's owner is killed mid-run: a follower on another node gets `error`
            # and `done` within the timeout.
            by_id = {node.node_id: node for node in (a, b, c)}
            async with streaming(ca, tenant, cid, "scenario:slow:3000") as (run_id, _):
                run = await until_status(cb, tenant, run_id, "running")
                owner = by_id[run["node_id"]]
                live = [node for node in (a, b, c) if node is not owner]
                watch = live[0].client()
                follower = asyncio.create_task(follow(watch, tenant, run_id, 0))
                await asyncio.sleep(0.5)
                killed_at = time.monotonic()
                await owner.stop(kill=True)
                events = await asyncio.wait_for(follower, 30)
                waited = time.monotonic() - killed_at
            assert [kind for kind, _ in events[-2:]] == ["error", "done"]
            assert events[-2][1]["error_type"] == "interrupted"
            assert waited <= TIMEOUT + 3 * HEARTBEAT + 1.0, waited
            await until_status(watch, tenant, run_id, "interrupted")

            # The next turn runs on another node with its history and its files.
            following = await stream_turn(watch, tenant, cid, "What did you write?")
            assert following.done["status"] == "success"
            last = await until_status(watch, tenant, following.done["run_id"], "succeeded")
            ran_on = by_id[last["node_id"]]
            assert ran_on is not owner
            workspace = ran_on.data_dir / "workspaces" / tenant.tenant_id / cid
            assert (workspace / "notes.md").read_text().startswith("Notes from the offline model")
            history = str(following.events)
            assert "You said: What did you write?" in following.text, history

            # Restarting a node leaves another node's run alone. (The stream that asked
            # for it is dropped first: a stopping node waits for the streams it serves.)
            cid2 = await new_conversation(watch, tenant)
            async with streaming(watch, tenant, cid2, "scenario:slow:1500") as (run_id, _):
                run = await until_status(watch, tenant, run_id, "running")
            bystander = next(n for n in live if n.node_id != run["node_id"])
            observer = next(n for n in live if n is not bystander).client()
            await bystander.stop()
            await bystander.start()
            assert (await until_status(observer, tenant, run_id, "running"))["node_id"]
            ended = await until_status(
                observer, tenant, run_id, "succeeded", "failed", "interrupted", "cancelled"
            )
            assert ended["status"] == "succeeded"
    finally:
        await reset_database(database_url)


def compose_nodes() -> dict[str, dict[str, str]]:
    """The service nodes of docker-compose.yml and their environment, as written there
    (YAML anchors merged; `${VAR:-default}` read as its default)."""
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    found = {}
    for name, service in compose["services"].items():
        if "build" in service:
            found[name] = {
                key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
                for key, value in service["environment"].items()
            }
    return found


async def test_the_compose_topology_runs_and_holds_the_tenant_limit(
    database_url: URL, s3_endpoint: str, tmp_path: Path
) -> None:
    """docker-compose.yml's nodes (two API nodes, two workers), started as the same
    processes with the same settings, but for what points at this machine's database and
    S3 server. Runs asked for through either API node run on the workers; 20 runs of a
    tenant whose limit is 2, sent through both API nodes, never run more than 2 at once
    (counted in the database as they go)."""
    storage = s3_storage(s3_endpoint)
    here = {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "DB_AUTO_MIGRATE": "false",  # migrated already
        "ADMIN_API_KEYS": ADMIN_KEY,
        "SECRET_KEY": "s" * 40,
        "STORAGE__BUCKET": storage.bucket,
        "STORAGE__ENDPOINT_URL": s3_endpoint,
        "STORAGE__ACCESS_KEY_ID": "test",
        "STORAGE__SECRET_ACCESS_KEY": "test",
        "LOG_LEVEL": "WARNING",
    }
    defined = compose_nodes()
    assert sorted(defined) == ["api-1", "api-2", "worker-1", "worker-2"]
    group = [
        Node(name, tmp_path / name, {**env, **here, "DATA_DIR": str(tmp_path / name)})
        for name, env in defined.items()
    ]
    try:
        for node in group:
            node.data_dir.mkdir()
            await node.start()
        apis = [n.client() for n in group if n.env["NODE_ROLES"] == "api"]
        tenant = await create_tenant(apis[0], "acme", settings={"max_concurrent_runs": 2})
        cids = [await new_conversation(apis[n % 2], tenant) for n in range(20)]
        engine = create_async_engine(database_url)
        peak, done = 0, asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            async with engine.connect() as conn:
                while not done.is_set():
                    running = await conn.scalar(
                        text(
                            "SELECT count(*) FROM runs WHERE tenant_id = 'acme' AND status = 'running'"
                        )
                    )
                    peak = max(peak, int(running or 0))
                    await conn.commit()
                    await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            streams = await asyncio.gather(
                *(
                    stream_turn(apis[n % 2], tenant, cid, "scenario:slow:100")
                    for n, cid in enumerate(cids)
                )
            )
        finally:
            done.set()
            await watcher
            await engine.dispose()
        assert [s.done["status"] for s in streams] == ["success"] * 20
        assert 1 <= peak <= 2, peak
        nodes_used = set()
        for s in streams:
            run = (
                await apis[1].get(tenant.url(f"/runs/{s.done['run_id']}"), headers=tenant.headers)
            ).json()
            nodes_used.add(run["node_id"])
        assert nodes_used <= {"worker-1", "worker-2"} and nodes_used, nodes_used
        assert any(p["type"] == "queued" for s in streams for p in s.of("progress"))
        health = (await apis[0].get("/health/ready")).json()
        assert health["roles"] == ["api"] and health["node_id"] == "api-1"
        assert health["takes_runs"] is False
        for worker in (n for n in group if n.env["NODE_ROLES"] == "worker"):
            ready = (await worker.client().get("/health/ready")).json()
            assert ready["takes_runs"] is True and ready["roles"] == ["worker"], ready
    finally:
        for node in group:
            for client in node.clients:
                await client.aclose()
            await node.stop()
        await reset_database(database_url)
