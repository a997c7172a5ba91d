"""What the agent's jail costs: the same service with the jail (bubblewrap, its own network
namespace, model calls through the egress bridge) and without (AGENT_SANDBOX=off), both
driving the same scripted model server, measured in turns in the same run:

- time to the first text event (a cold turn: jail and CLI start included)  target <= 1.10
- text events delivered per second for a 20,000-chunk answer              target >= 0.95

Run: `uv run python -m bench.jail`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx

from app.services.execute.offline_model import OfflineModelServer
from bench.common import fresh_database, server_url
from bench.runs import bench_tenant, service_turn, start_service

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "11"))
CHUNKS = int(os.environ.get("BENCH_CHUNKS", "20000"))
MODES = ("jail", "no jail")


async def main() -> None:
    server, stop_server = server_url()
    model = OfflineModelServer()
    model.start()
    services: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as scratch:
            clients: dict[str, httpx.AsyncClient] = {}
            headers: dict[str, dict[str, str]] = {}
            for n, mode in enumerate(MODES):
                url = await fresh_database(server, f"cmab_bench_jail_{n}")
                # Each turn is a new conversation: a cold start, jail included.
                service, base = start_service(
                    url.render_as_string(hide_password=False),
                    model.url,
                    Path(scratch) / f"data-{n}",
                    MAX_WARM_SESSIONS="0",
                    AGENT_SANDBOX="on" if mode == "jail" else "off",
                )
                services.append(service)
                clients[mode] = httpx.AsyncClient(base_url=base, timeout=300)
                health = (await clients[mode].get("/health")).json()
                expected = "on" if mode == "jail" else "off"
                assert health["agent_sandbox"] == expected, health
                headers[mode] = await bench_tenant(clients[mode])
                await service_turn(clients[mode], headers[mode], "warm up")
            ttft: dict[str, list[float]] = {mode: [] for mode in MODES}
            rate: dict[str, list[float]] = {mode: [] for mode in MODES}
            for round_number in range(ROUNDS):
                # Alternate which goes first, so drift falls on both alike.
                order = MODES if round_number % 2 == 0 else MODES[::-1]
                for mode in order:
                    first, _, _ = await service_turn(clients[mode], headers[mode], "Hello")
                    ttft[mode].append(first)
            for round_number in range(ROUNDS):
                order = MODES if round_number % 2 == 0 else MODES[::-1]
                for mode in order:
                    _, deltas, span = await service_turn(
                        clients[mode], headers[mode], f"scenario:text:{CHUNKS}"
                    )
                    assert deltas == CHUNKS, (mode, deltas)
                    rate[mode].append(deltas / span)
            for client in clients.values():
                await client.aclose()
        jail_ttft, free_ttft = (statistics.median(ttft[m]) for m in MODES)
        jail_rate, free_rate = (statistics.median(rate[m]) for m in MODES)
        ttft_ratio, rate_ratio = jail_ttft / free_ttft, jail_rate / free_rate
        print(f"time to first text event (median of {ROUNDS} cold turns)")
        print(f"  no jail    {free_ttft * 1000:8.1f} ms")
        print(f"  jail       {jail_ttft * 1000:8.1f} ms")
        verdict = "OK" if ttft_ratio <= 1.10 else "MISSED"
        print(f"  ratio jail/no jail: {ttft_ratio:.3f}  (target <= 1.10)  {verdict}")
        print(f"text events per second, {CHUNKS}-chunk answer (median of {ROUNDS})")
        print(f"  no jail    {free_rate:10.0f} /s")
        print(f"  jail       {jail_rate:10.0f} /s")
        verdict = "OK" if rate_ratio >= 0.95 else "MISSED"
        print(f"  ratio jail/no jail: {rate_ratio:.3f}  (target >= 0.95)  {verdict}")
    finally:
        for service in services:
            service.terminate()
            service.wait(timeout=60)
        model.stop()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
