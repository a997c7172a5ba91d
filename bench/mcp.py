"""MCP servers, measured in one run:

- time to the first text event of a warm turn (the agent process and its MCP connections
  reused) for a tenant with 3 MCP servers (streamable HTTP, SSE, and an OpenAPI API of 50
  operations) against a tenant with none, through the service        target ratio <= 1.10
- the time one tool call takes through the service's proxy (an in-process SDK server
  forwarding to the upstream) against the CLI calling the same server directly, with the
  bare SDK, each measured as (a turn of N calls - a turn of none) / N

Run: `uv run python -m bench.mcp`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from claude_agent_sdk import ClaudeSDKClient, ResultMessage
from fastapi import FastAPI

from app.services.execute.offline_model import OfflineModelServer
from app.services.mcp.proxy import ServerPlan, proxy_server
from app.services.mcp.upstream import Upstream
from bench.common import fresh_database, server_url
from bench.runs import (
    bench_tenant,
    interleaved_ttft,
    new_conversation,
    print_ratio,
    service_turn,
    start_service,
)
from tests.integration.bare_sdk import bare_options
from tests.integration.live_server import serve
from tests.integration.mcp_servers import crm

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "20"))
CALLS = int(os.environ.get("BENCH_CALLS", "20"))
OPERATIONS = 50


def api_of(operations: int) -> FastAPI:
    app = FastAPI()
    for n in range(operations):

        async def handler(item_id: str, verbose: bool = False, n: int = n) -> dict[str, Any]:
            return {"operation": n, "item": item_id, "verbose": verbose}

        app.add_api_route(
            f"/things{n}/{{item_id}}", handler, methods=["GET"], operation_id=f"op{n}"
        )
    return app


async def warm_ttft(base: str, model_url: str, scratch: Path, urls: dict[str, str]) -> None:
    service, address = start_service(
        base, model_url, scratch / "data", OUTBOUND_ALLOW_HOSTS="127.0.0.1"
    )
    try:
        async with httpx.AsyncClient(base_url=address, timeout=300) as http:
            tenants = {
                "none": ("plain", await bench_tenant(http, "plain")),
                "3 servers": ("bench", await bench_tenant(http, "bench")),
            }
            headers = tenants["3 servers"][1]
            servers = [
                {"name": "crm", "type": "http", "config": {"url": urls["http"]}},
                {"name": "crm-sse", "type": "sse", "config": {"url": urls["sse"]}},
                {
                    "name": "api",
                    "type": "openapi",
                    "config": {"spec_url": f"{urls['api']}/openapi.json", "base_url": urls["api"]},
                },
            ]
            for body in servers:
                made = await http.post("/api/tenants/bench/mcp-servers", json=body, headers=headers)
                made.raise_for_status()
            conversations = {}
            for name, (tenant, headers) in tenants.items():
                conversations[name] = await new_conversation(http, headers, tenant)
                await service_turn(http, headers, "warm up", conversations[name], tenant)
            arms = {
                name: (headers, conversations[name], tenant)
                for name, (tenant, headers) in tenants.items()
            }
            ttft = await interleaved_ttft(http, arms, ROUNDS)
    finally:
        service.terminate()
        service.wait(timeout=60)
    print_ratio(
        f"time to first text event, warm turns (median of {ROUNDS})",
        ("no MCP servers", ttft["none"]),
        (f"3 (OpenAPI: {OPERATIONS} ops)", ttft["3 servers"]),
        1.10,
    )


async def _turn(model_url: str, workdir: Path, servers: dict[str, Any], prompt: str) -> float:
    options = bare_options(model_url, workdir, tools=["Read"], mcp_servers=servers)
    async with ClaudeSDKClient(options) as client:
        await client.query("warm up")  # the process and its connections ready
        async for message in client.receive_response():
            if isinstance(message, ResultMessage):
                break
        started = time.perf_counter()
        await client.query(prompt)
        async for message in client.receive_response():
            if isinstance(message, ResultMessage):
                assert not message.is_error, message
                break
        return time.perf_counter() - started


async def per_call(model_url: str, scratch: Path, url: str) -> None:
    calls = [["mcp__crm__lookup", {"customer": f"c{n}"}] for n in range(CALLS)]
    many = "scenario:hostile " + json.dumps(calls)
    none = "scenario:hostile []"
    plan = ServerPlan(
        name="crm", type="http", config={"url": url}, allowed_tools=None, timeout_seconds=30
    )
    upstream = Upstream(plan)
    await upstream.open(["127.0.0.1"])
    try:
        assert upstream.client is not None
        setups = {
            "direct": {"crm": {"type": "http", "url": url}},
            "proxy": {"crm": proxy_server(plan, upstream.client, upstream.tools)},
        }
        times: dict[str, list[float]] = {name: [] for name in setups}
        for round_number in range(3):
            for name, servers in setups.items():
                workdir = scratch / f"{name}-{round_number}"
                workdir.mkdir(parents=True)
                with_calls = await _turn(model_url, workdir, servers, many)
                (workdir / "b").mkdir()
                without = await _turn(model_url, workdir / "b", servers, none)
                times[name].append((with_calls - without) / CALLS)
    finally:
        await upstream.close()
    direct, proxied = (statistics.median(times[k]) for k in ("direct", "proxy"))
    print(f"one MCP tool call, bare SDK (median of 3, {CALLS} calls a turn)")
    print(f"  CLI to the server directly   {direct * 1000:8.1f} ms")
    print(f"  through the service's proxy  {proxied * 1000:8.1f} ms")
    print(f"  overhead: {(proxied - direct) * 1000:+.1f} ms a call")


async def main() -> None:
    server, stop_server = server_url()
    model = OfflineModelServer()
    model.start()
    try:
        with ExitStack() as servers, tempfile.TemporaryDirectory() as scratch:
            http_url, _ = servers.enter_context(crm("http"))
            sse_url, _ = servers.enter_context(crm("sse"))
            api = servers.enter_context(serve(api_of(OPERATIONS)))
            url = await fresh_database(server, "cmab_bench_mcp")
            await warm_ttft(
                url.render_as_string(hide_password=False),
                model.url,
                Path(scratch),
                {"http": http_url, "sse": sse_url, "api": api},
            )
            await per_call(model.url, Path(scratch) / "calls", http_url)
    finally:
        model.stop()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
