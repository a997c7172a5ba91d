"""Helpers to run a turn through the API, read its SSE stream, re-attach to it, and
find its agent process; and a whole service on a real Uvicorn server."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from sqlalchemy import URL

from app.main import create_app
from app.services.execute.spec import workspace_dir
from tests.conftest import TenantFixture, make_settings, reset_database
from tests.integration.live_server import serve_in_loop

Event = tuple[str, dict[str, Any]]


@dataclass
class Stream:
    status_code: int
    events: list[Event]
    ids: list[str]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == kind]

    @property
    def done(self) -> dict[str, Any]:
        assert self.events and self.events[-1][0] == "done", self.events[-3:]
        return self.events[-1][1]

    @property
    def text(self) -> str:
        return "".join(d["text"] for d in self.of("text_delta") if "parent_agent_id" not in d)


async def stream_turn(
    client: httpx.AsyncClient,
    tenant: TenantFixture,
    conversation_id: str,
    user_input: str,
    texting: asyncio.Event | None = None,
    **body: Any,
) -> Stream:
    """The turn's whole stream; `texting` is set once its first text arrives."""
    url = tenant.url(f"/conversations/{conversation_id}/stream")
    events: list[Event] = []
    ids: list[str] = []
    async with aconnect_sse(
        client,
        "POST",
        url,
        json={"user_input": user_input, **body},
        headers=tenant.headers,
        timeout=120,
    ) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            return Stream(source.response.status_code, [("http_error", source.response.json())], [])
        async for sse in source.aiter_sse():
            events.append((sse.event, json.loads(sse.data)))
            ids.append(sse.id)
            if texting is not None and sse.event == "text_delta":
                texting.set()
    return Stream(200, events, ids)


async def new_conversation(client: httpx.AsyncClient, tenant: TenantFixture, **body: Any) -> str:
    response = await client.post(tenant.url("/conversations"), json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["conversation_id"])


async def follow(
    client: httpx.AsyncClient, tenant: TenantFixture, run_id: str, last_event_id: int | None = None
) -> list[Event]:
    """Re-attach to a run and read to its end."""
    headers = dict(tenant.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    events = []
    async with aconnect_sse(
        client, "GET", tenant.url(f"/runs/{run_id}/events"), headers=headers, timeout=120
    ) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.event != "ping":  # a slow machine may leave 10 s of silence
                events.append((sse.event, json.loads(sse.data)))
    return events


async def wait_for_run(client: httpx.AsyncClient, tenant: TenantFixture, cid: str) -> str:
    """The id of the conversation's first run, once it is recorded."""
    for _ in range(400):
        messages = (
            await client.get(tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers)
        ).json()
        if messages["items"]:
            return str(messages["items"][0]["run_id"])
        await asyncio.sleep(0.025)
    raise AssertionError("the run did not start")


async def start_turn(
    client: httpx.AsyncClient,
    tenant: TenantFixture,
    cid: str,
    user_input: str,
    texting: asyncio.Event | None = None,
) -> tuple[asyncio.Task[Stream], str]:
    """A turn streaming in the background, and its run id once the run is recorded."""
    task = asyncio.create_task(stream_turn(client, tenant, cid, user_input, texting))
    return task, await wait_for_run(client, tenant, cid)


async def wait_running(client: httpx.AsyncClient, tenant: TenantFixture, run_id: str) -> None:
    """Until the run has left the queue and its agent is at work."""
    for _ in range(400):
        run = (await client.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)).json()
        if run["status"] == "running":
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the run never ran")


async def stream_until(
    client: httpx.AsyncClient,
    tenant: TenantFixture,
    cid: str,
    user_input: str,
    stop: Callable[[Event], bool],
) -> tuple[str, list[Event], str]:
    """Start a turn and read its stream until `stop(event)` says so, then drop the
    connection: the run id, the events seen and the last event id."""
    seen: list[Event] = []
    last_id = ""
    async with aconnect_sse(
        client,
        "POST",
        tenant.url(f"/conversations/{cid}/stream"),
        json={"user_input": user_input},
        headers=tenant.headers,
        timeout=60,
    ) as source:
        run_id = source.response.headers["x-run-id"]
        async for sse in source.aiter_sse():
            seen.append((sse.event, json.loads(sse.data)))
            last_id = sse.id
            if stop(seen[-1]):
                break
    return run_id, seen, last_id


def parse_sse(body: str) -> list[Event]:
    """The events of a whole SSE body, read at once."""
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def agent_pids(data_dir: Path, tenant: TenantFixture, cid: str) -> list[int]:
    """The agent CLI processes working in the conversation's workspace (not their jail's
    other processes)."""
    workspace = str(workspace_dir(data_dir, tenant.tenant_id, cid))
    return [
        p.pid
        for p in psutil.process_iter(["cwd", "name"])
        if p.info["cwd"] == workspace and p.info["name"] == "claude"
    ]


async def gone(data_dir: Path, tenant: TenantFixture, cid: str, seconds: float = 5.0) -> bool:
    """The conversation's agent process ends within `seconds`."""
    for _ in range(int(seconds / 0.1)):
        if not agent_pids(data_dir, tenant, cid):
            return True
        await asyncio.sleep(0.1)
    return False


@asynccontextmanager
async def running_service(
    database_url: URL, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A service with these settings, on a real Uvicorn server; the database is reset
    after it stops."""
    app = create_app(make_settings(database_url, tmp_path, **settings))
    try:
        async with (
            app.router.lifespan_context(app),
            serve_in_loop(app) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            yield app, client
    finally:
        await reset_database(database_url)


# Where the kernel schedules sessions as groups (sched_autogroup).
GROUPED = os.path.exists("/proc/self/autogroup")


def scheduling_group(pid: int | str = "self") -> str:
    """A process's scheduling group where the kernel groups sessions (sched_autogroup):
    "/autogroup-7 nice 0"; "" where there is none (or it is the kernel's first)."""
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().strip()
    except OSError:
        return ""


def hostile(*calls: list[Any]) -> str:
    return "scenario:hostile " + json.dumps(list(calls))


def report(stream: Stream) -> list[str]:
    """The hostile model's report, one entry per call: '[n] Tool OK|ERROR: output'."""
    result = str(stream.done["result"])
    assert result.startswith("[offline model] Hostile report:"), stream.events[-3:]
    entries: list[str] = []
    for line in result.splitlines()[1:]:
        if line.startswith(f"[{len(entries) + 1}] "):
            entries.append(line)
        elif entries:
            entries[-1] += "\n" + line
    return entries


def ok(entry: str) -> bool:
    return entry.split(":", 1)[0].endswith(" OK")
