"""Agent runs through the service against the bare SDK, both driving the same scripted
model server, measured in the same run:

- time to the first text event (a cold turn: CLI start included)   target ratio <= 1.10
- text events delivered per second for a 5,000-chunk answer       target ratio >= 0.80

The service runs as its own process (`python -m app`, real HTTP and SSE); the bare SDK
runs in this process. Run: `uv run python -m bench.runs`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx
from claude_agent_sdk import ClaudeSDKClient, StreamEvent

from app.services.execute.offline_model import OfflineModelServer
from bench.common import ADMIN_KEY, fresh_database, server_url
from tests.integration.bare_sdk import bare_options
from tests.integration.live_server import spawn_service

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CHUNKS = int(os.environ.get("BENCH_CHUNKS", "5000"))
TEXT_DELTA = b"event: text_delta\n"  # how a text event's block begins


async def bare_turn(model_url: str, workdir: Path, prompt: str) -> tuple[float, int, float]:
    """(seconds to the first text delta, text deltas, seconds from first to last delta)."""
    options = bare_options(model_url, workdir, include_partial_messages=True)
    started = time.perf_counter()
    first = last = 0.0
    deltas = 0
    async with ClaudeSDKClient(options) as client:
        await client.query(prompt)
        async for message in client.receive_response():
            if (
                isinstance(message, StreamEvent)
                and message.event.get("type") == "content_block_delta"
            ):
                last = time.perf_counter()
                first = first or last
                deltas += 1
    return first - started, deltas, last - first


async def new_conversation(
    http: httpx.AsyncClient, headers: dict[str, str], tenant: str = "bench"
) -> str:
    created = await http.post(f"/api/tenants/{tenant}/conversations", json={}, headers=headers)
    created.raise_for_status()
    return str(created.json()["conversation_id"])


def open_turn(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    cid: str,
    prompt: str,
    tenant: str = "bench",
    timeout: float = 300,
) -> AbstractAsyncContextManager[httpx.Response]:
    """The stream request of one turn, to `async with`."""
    return http.stream(
        "POST",
        f"/api/tenants/{tenant}/conversations/{cid}/stream",
        json={"user_input": prompt},
        headers=headers,
        timeout=timeout,
    )


async def whole_events(response: httpx.Response) -> AsyncIterator[list[bytes]]:
    """The stream's SSE events, whole (an event may be split across chunks): those each
    chunk completes, as it arrives."""
    pending = b""
    async for chunk in response.aiter_bytes():
        *events, pending = (pending + chunk).split(b"\n\n")
        yield events


async def service_turn(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    prompt: str,
    cid: str | None = None,
    tenant: str = "bench",
) -> tuple[float, int, float]:
    """(seconds to the first text delta, text deltas, seconds from first to last delta)
    of one turn through the service, on a new conversation unless `cid` is given."""
    cid = cid or await new_conversation(http, headers, tenant)
    started = time.perf_counter()
    first = last = 0.0
    deltas = 0
    done = b""
    # Counted on whole SSE events as they arrive, without parsing their JSON: the figure
    # is what the service delivers, not how fast a Python client decodes it.
    async with open_turn(http, headers, cid, prompt, tenant) as response:
        async for events in whole_events(response):
            count = sum(1 for event in events if event.startswith(TEXT_DELTA))
            if count:
                last = time.perf_counter()
                first = first or last
                deltas += count
            done = next((e for e in events if e.startswith(b"event: done")), done)
    assert b'"status":"success"' in done, done
    return first - started, deltas, last - first


async def interleaved_ttft(
    http: httpx.AsyncClient,
    arms: dict[str, tuple[dict[str, str], str | None, str]],
    rounds: int,
) -> dict[str, float]:
    """Median seconds to the first text delta of each arm's "Hello" turns: arm name ->
    (headers, conversation or None for a new one each turn, tenant). The arms take turns,
    in an order that flips each round, so drift falls on all of them alike."""
    ttft: dict[str, list[float]] = {name: [] for name in arms}
    for n in range(rounds):
        order = list(arms.items())
        for name, (headers, cid, tenant) in order if n % 2 == 0 else order[::-1]:
            first, _, _ = await service_turn(http, headers, "Hello", cid, tenant)
            ttft[name].append(first)
    return {name: statistics.median(values) for name, values in ttft.items()}


def print_ratio(
    title: str, baseline: tuple[str, float], measured: tuple[str, float], target: float
) -> None:
    """The two medians and their ratio against the target."""
    ratio = measured[1] / baseline[1]
    print(title)
    for label, seconds in (baseline, measured):
        print(f"  {label:<22} {seconds * 1000:8.1f} ms")
    print(
        f"  ratio: {ratio:.3f}  (target <= {target:.2f})  {'OK' if ratio <= target else 'MISSED'}"
    )


def start_service(
    database_url: str, model_url: str, data_dir: Path, **settings: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m app` on a free port, pointed at the scripted model server; `settings`
    are more environment variables (MAX_WARM_SESSIONS="0", say)."""
    return spawn_service(
        {
            "DATABASE_URL": database_url,
            "DB_AUTO_MIGRATE": "false",
            "ADMIN_API_KEYS": ADMIN_KEY,
            "DATA_DIR": str(data_dir),
            "LOG_LEVEL": "WARNING",
            "MODEL_PROVIDER": "anthropic",
            "ANTHROPIC_API_KEY": "offline",
            "ANTHROPIC_BASE_URL": model_url,
            **settings,
        }
    )


def _median(values: list[float]) -> float:
    return statistics.median(values)


async def bench_tenant(
    http: httpx.AsyncClient, tenant: str = "bench", **settings: int
) -> dict[str, str]:
    """A tenant (`bench` unless named), made with these settings; the headers of a key of
    its own."""
    admin = {"X-API-Key": ADMIN_KEY}
    body = {"tenant_id": tenant, "name": tenant.title(), "settings": settings}
    (await http.post("/api/tenants", json=body, headers=admin)).raise_for_status()
    key = await http.post(f"/api/tenants/{tenant}/api-keys", json={"name": "b"}, headers=admin)
    key.raise_for_status()
    return {"X-API-Key": key.json()["key"]}


async def main() -> None:
    server, stop_server = server_url()
    model = OfflineModelServer()
    model.start()
    service = None
    try:
        url = await fresh_database(server, "cmab_bench_runs")
        with tempfile.TemporaryDirectory() as scratch:
            data_dir, workdir = Path(scratch) / "data", Path(scratch) / "bare"
            workdir.mkdir()
            # Every turn here is a new conversation, as the bare SDK's is a new process:
            # warm sessions could serve none of them, and would only idle beside them.
            service, base = start_service(
                url.render_as_string(hide_password=False),
                model.url,
                data_dir,
                MAX_WARM_SESSIONS="0",
            )
            async with httpx.AsyncClient(base_url=base, timeout=300) as http:
                headers = await bench_tenant(http)
                ttft: dict[str, list[float]] = {"bare": [], "service": []}
                rate: dict[str, list[float]] = {"bare": [], "service": []}
                await bare_turn(
                    model.url, workdir, "warm up"
                )  # first CLI start pays the page cache
                await service_turn(http, headers, "warm up")
                for _ in range(ROUNDS):
                    first, _, _ = await bare_turn(model.url, workdir, "Hello")
                    ttft["bare"].append(first)
                    first, _, _ = await service_turn(http, headers, "Hello")
                    ttft["service"].append(first)
                for _ in range(ROUNDS):
                    _, deltas, span = await bare_turn(model.url, workdir, f"scenario:text:{CHUNKS}")
                    rate["bare"].append(deltas / span)
                    _, deltas, span = await service_turn(http, headers, f"scenario:text:{CHUNKS}")
                    assert deltas == CHUNKS, deltas
                    rate["service"].append(deltas / span)
        bare_ttft, service_ttft = _median(ttft["bare"]), _median(ttft["service"])
        bare_rate, service_rate = _median(rate["bare"]), _median(rate["service"])
        print(f"time to first text event (median of {ROUNDS} cold turns)")
        print(f"  bare SDK   {bare_ttft * 1000:8.1f} ms")
        print(f"  service    {service_ttft * 1000:8.1f} ms")
        ttft_ratio = service_ttft / bare_ttft
        print(
            f"  ratio service/bare: {ttft_ratio:.3f}  (target <= 1.10)  {'OK' if ttft_ratio <= 1.10 else 'MISSED'}"
        )
        print(f"text events per second, {CHUNKS}-chunk answer")
        print(f"  bare SDK   {bare_rate:10.0f} /s")
        print(f"  service    {service_rate:10.0f} /s")
        rate_ratio = service_rate / bare_rate
        print(
            f"  ratio service/bare: {rate_ratio:.3f}  (target >= 0.80)  {'OK' if rate_ratio >= 0.80 else 'MISSED'}"
        )
    finally:
        if service is not None:
            service.terminate()
            service.wait(timeout=60)
        model.stop()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
