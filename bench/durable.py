"""Durable runs, measured in one run against the same scripted model server:

- the second turn of a conversation, time to its first text event: on a warm session
  vs. a cold resume (a service with MAX_WARM_SESSIONS=0)        target: >= 3x faster
- CONCURRENT runs streaming at once, half of their clients dropping mid-answer and
  re-attaching with Last-Event-ID: events received = events persisted, none lost
- what each warm session costs while idle (its CLI process: RSS, USS, CPU)

Both services run as their own processes (`python -m app`, real HTTP and SSE).
Run: `uv run python -m bench.durable`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.services.execute.offline_model import OfflineModelServer
from bench.common import fresh_database, server_url
from bench.runs import bench_tenant, new_conversation, service_turn, start_service

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "20"))
CHUNKS = int(os.environ.get("BENCH_CONCURRENT_CHUNKS", "400"))
DROP_AFTER = 50  # events a dropping client reads before it goes
IDLE_SAMPLE = 10.0  # seconds over which the warm processes' idle CPU is measured


def _ids(block: bytes) -> list[int]:
    return [int(line[4:]) for line in block.split(b"\n") if line.startswith(b"id: ")]


async def _read(response: httpx.Response, seen: list[int], stop_after: int | None) -> bool:
    """Collect event ids until the stream ends (True) or `stop_after` ids (False)."""
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        complete, _, buffer = buffer.rpartition(b"\n\n")
        seen.extend(_ids(complete))
        if b"event: done" in complete:
            return True
        if stop_after is not None and len(seen) >= stop_after:
            return False
    return True


async def concurrent_client(
    http: httpx.AsyncClient, headers: dict[str, str], drop: bool
) -> tuple[str, list[int]]:
    """One client's run: (run id, the event ids it received, across re-attaches)."""
    cid = await new_conversation(http, headers)
    seen: list[int] = []
    async with http.stream(
        "POST",
        f"/api/tenants/bench/conversations/{cid}/stream",
        json={"user_input": f"scenario:text:{CHUNKS}"},
        headers=headers,
    ) as response:
        run_id = response.headers["x-run-id"]
        finished = await _read(response, seen, DROP_AFTER if drop else None)
    while not finished:  # dropped: come back for the rest
        await asyncio.sleep(0.2)
        async with http.stream(
            "GET",
            f"/api/tenants/bench/runs/{run_id}/events",
            headers={**headers, "Last-Event-ID": str(seen[-1])},
        ) as response:
            finished = await _read(response, seen, None)
    return run_id, seen


def warm_processes(data_dir: Path) -> list[psutil.Process]:
    workspaces = str(data_dir.resolve() / "workspaces")
    found = []
    for process in psutil.process_iter(["cwd"]):
        if (process.info["cwd"] or "").startswith(workspaces):
            found.append(process)
    return found


async def main() -> None:
    server, stop_server = server_url()
    model = OfflineModelServer()
    model.start()
    services: list[subprocess.Popen[bytes]] = []
    try:
        warm_db = await fresh_database(server, "cmab_bench_warm")
        cold_db = await fresh_database(server, "cmab_bench_cold")
        with tempfile.TemporaryDirectory() as scratch:
            warm_dir, cold_dir = Path(scratch) / "warm", Path(scratch) / "cold"
            limits = {"MAX_CONCURRENT_RUNS": str(CONCURRENT), "MAX_WARM_SESSIONS": str(CONCURRENT)}
            warm, warm_url = start_service(
                warm_db.render_as_string(hide_password=False), model.url, warm_dir, **limits
            )
            services.append(warm)
            cold, cold_url = start_service(
                cold_db.render_as_string(hide_password=False),
                model.url,
                cold_dir,
                MAX_WARM_SESSIONS="0",
            )
            services.append(cold)
            async with (
                httpx.AsyncClient(base_url=warm_url, timeout=300) as warm_http,
                httpx.AsyncClient(base_url=cold_url, timeout=300) as cold_http,
            ):
                warm_headers = await bench_tenant(warm_http, max_concurrent_runs=CONCURRENT)
                cold_headers = await bench_tenant(cold_http)
                await service_turn(warm_http, warm_headers, "warm up")
                await service_turn(cold_http, cold_headers, "warm up")

                second: dict[str, list[float]] = {"warm": [], "cold": []}
                for _ in range(ROUNDS):  # interleaved, so drift falls on both alike
                    for name, http, headers in (
                        ("warm", warm_http, warm_headers),
                        ("cold", cold_http, cold_headers),
                    ):
                        cid = await new_conversation(http, headers)
                        await service_turn(http, headers, "Remember the word pelican", cid)
                        first, _, _ = await service_turn(http, headers, "What was it?", cid)
                        second[name].append(first)
                warm_ttft, cold_ttft = (statistics.median(second[n]) for n in ("warm", "cold"))
                speedup = cold_ttft / warm_ttft
                print(f"second turn, time to first text event (median of {ROUNDS})")
                print(f"  cold resume   {cold_ttft * 1000:8.1f} ms")
                print(f"  warm session  {warm_ttft * 1000:8.1f} ms")
                verdict = "OK" if speedup >= 3 else "MISSED"
                print(f"  warm is {speedup:.1f}x faster  (target >= 3x)  {verdict}")

                started = time.perf_counter()
                results = await asyncio.gather(
                    *(
                        concurrent_client(warm_http, warm_headers, drop=i % 2 == 1)
                        for i in range(CONCURRENT)
                    )
                )
                elapsed = time.perf_counter() - started
            engine = create_async_engine(warm_db)
            try:
                async with engine.connect() as conn:
                    rows = await conn.execute(
                        text(
                            "SELECT run_id::text, array_agg(seq ORDER BY seq) FROM run_events "
                            "GROUP BY run_id"
                        )
                    )
                    persisted = {run_id: list(seqs) for run_id, seqs in rows}
            finally:
                await engine.dispose()
            received = sum(len(seen) for _, seen in results)
            stored = sum(len(persisted.get(run_id, [])) for run_id, _ in results)
            exact = all(seen == persisted.get(run_id) for run_id, seen in results)
            print(
                f"{CONCURRENT} concurrent runs ({CHUNKS}-chunk answers), "
                f"{CONCURRENT // 2} clients dropping after {DROP_AFTER} events and re-attaching"
            )
            print(f"  events persisted {stored}, received {received}, lost {stored - received}")
            print(
                f"  every client saw exactly the persisted log, in order: {exact}  "
                f"{'OK' if exact and stored == received else 'MISSED'}"
            )
            print(f"  all done in {elapsed:.1f} s ({received / elapsed:,.0f} events/s delivered)")

            processes = warm_processes(warm_dir)
            rss = [p.memory_info().rss for p in processes]
            uss = [p.memory_full_info().uss for p in processes]
            cpu_before = sum(sum(p.cpu_times()[:2]) for p in processes)
            await asyncio.sleep(IDLE_SAMPLE)
            idle_cpu = sum(sum(p.cpu_times()[:2]) for p in processes) - cpu_before
            if processes:
                print(f"memory per warm session ({len(processes)} warm CLI processes)")
                print(
                    f"  RSS {statistics.mean(rss) / 2**20:6.1f} MiB  (shared pages counted in each)"
                )
                print(f"  USS {statistics.mean(uss) / 2**20:6.1f} MiB  (its own pages only)")
                share = idle_cpu / IDLE_SAMPLE / len(processes)
                print(f"  CPU while idle {share:.1%} of a core each (over {IDLE_SAMPLE:g} s)")
    finally:
        for service in services:
            service.terminate()
            service.wait(timeout=120)
        model.stop()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
