"""Real time under load, measured in one run: N runs started at once, each on its own
conversation, each answer 300 text deltas paced at 50 a second by the scripted model
(each delta carries the time the model sent it), through the service vs the bare SDK
(N `ClaudeSDKClient` turns in one process), for N = 10, 25, 50, 100:

- runs ok / failed; events received vs persisted (service)
- time to first text p50 / p95
- lag p99: client arrival - the model's send, over every delta
- peak resident memory of the process tree (the service and its agents; this process's
  agents for the bare SDK); CPU-seconds per run of this process (the scripted model and
  the clients, the bare SDK included) and of the service process

Targets (issue 14): N=100 all succeed with no event lost; at N=50 lag p99 <= 2x the
bare SDK's, and time to first text p95 <= 1.1x.

Run: `uv run python -m bench.load` (BENCH_LOAD="10,25" for fewer; AGENT_STARTUPS=N, or any
other AGENT_ setting, to try it).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from claude_agent_sdk import ClaudeSDKClient, ResultMessage, StreamEvent
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.services.execute.offline_model import OfflineModelServer
from bench.common import fresh_database, server_url
from bench.runs import bench_tenant, new_conversation, open_turn, start_service, whole_events
from tests.integration.bare_sdk import bare_options

SIZES = [int(n) for n in os.environ.get("BENCH_LOAD", "10,25,50,100").split(",")]
PROMPT = "scenario:paced:300x20"


@dataclass
class Arm:
    ok: int = 0
    failed: int = 0
    received: int = 0
    persisted: int = 0
    first: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    cpu: float = 0.0  # the service process's own CPU-seconds (not its agents')
    # This process's CPU-seconds meanwhile: the scripted model and the clients (the bare
    # SDK's own work included, for the bare SDK).
    bench_cpu: float = 0.0


def _sent_times(chunk: str) -> list[float]:
    return [float(word) for word in chunk.split() if word.replace(".", "", 1).isdigit()]


async def _peak(root: psutil.Process, arm: Arm, stop: asyncio.Event) -> None:
    """The process tree's resident memory, sampled every half second."""
    while not stop.is_set():
        total = 0
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        arm.peak_bytes = max(arm.peak_bytes, total)
        await asyncio.sleep(0.5)


async def _bare(model_url: str, workdir: Path, arm: Arm) -> None:
    options = bare_options(model_url, workdir, include_partial_messages=True)
    started = time.perf_counter()
    first_seen = False
    try:
        async with ClaudeSDKClient(options) as client:
            await client.query(PROMPT)
            async for message in client.receive_response():
                if isinstance(message, StreamEvent):
                    delta = message.event.get("delta") or {}
                    if delta.get("type") == "text_delta":
                        now = time.time()
                        arm.lags.extend(now - sent for sent in _sent_times(delta["text"]))
                        if not first_seen:
                            first_seen = True
                            arm.first.append(time.perf_counter() - started)
                elif isinstance(message, ResultMessage):
                    if message.is_error:
                        arm.failed += 1
                    else:
                        arm.ok += 1
    except Exception:
        arm.failed += 1


async def _service(
    http: httpx.AsyncClient, headers: dict[str, str], cid: str, arm: Arm, runs: list[str]
) -> None:
    started = time.perf_counter()
    first_seen = False
    status = None
    try:
        async with open_turn(http, headers, cid, PROMPT, timeout=600) as response:
            if response.status_code != 200:
                arm.failed += 1
                return
            runs.append(response.headers["x-run-id"])
            async for events in whole_events(response):
                now = time.time()
                for event in events:
                    kind = event.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
                    if kind == "ping":
                        continue
                    arm.received += 1
                    data = json.loads(event.rsplit(b"data: ", 1)[1])
                    if kind == "text_delta":
                        if not first_seen:
                            first_seen = True
                            arm.first.append(time.perf_counter() - started)
                        arm.lags.extend(now - sent for sent in _sent_times(data["text"]))
                    elif kind == "done":
                        status = data["status"]
    except Exception:
        status = None
    if status == "success":
        arm.ok += 1
    else:
        arm.failed += 1


def _line(name: str, arm: Arm) -> str:
    first = sorted(arm.first) or [float("nan")]
    lags = sorted(arm.lags) or [float("nan")]
    p95 = first[min(len(first) - 1, int(len(first) * 0.95))]
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    runs = max(arm.ok + arm.failed, 1)
    events = f"  bench CPU {arm.bench_cpu / runs:4.2f} s/run"
    if name == "service":
        events += f"  own CPU {arm.cpu / runs:4.2f} s/run  events {arm.received}/{arm.persisted}"
    return (
        f"  {name:<8} ok {arm.ok:>3} failed {arm.failed:>3}  first text p50"
        f" {statistics.median(first):6.2f} s p95 {p95:6.2f} s  lag p99 {p99:7.3f} s"
        f"  peak {arm.peak_bytes / 2**30:5.2f} GiB{events}"
    )


async def main() -> None:
    server, stop_server = server_url()
    model = OfflineModelServer()
    model.start()
    results: dict[int, tuple[Arm, Arm]] = {}
    try:
        url = await fresh_database(server, "cmab_bench_load")
        raw = url.render_as_string(hide_password=False)
        engine = create_async_engine(url)
        with tempfile.TemporaryDirectory() as scratch:
            service, base = start_service(
                raw,
                model.url,
                Path(scratch) / "data",
                MAX_WARM_SESSIONS="0",
                MAX_CONCURRENT_RUNS=str(max(SIZES)),
                MAX_QUEUED_RUNS=str(max(SIZES)),
                RUN_QUEUE_TIMEOUT="600",
                **{k: v for k, v in os.environ.items() if k.startswith("AGENT_")},
            )
            try:
                async with httpx.AsyncClient(base_url=base, timeout=600) as http:
                    headers = await bench_tenant(http, max_concurrent_runs=max(SIZES))
                    for size in SIZES:
                        bare, through = Arm(), Arm()
                        stop = asyncio.Event()
                        sampler = asyncio.create_task(_peak(psutil.Process(), bare, stop))
                        dirs = [Path(scratch) / f"bare-{size}-{n}" for n in range(size)]
                        for d in dirs:
                            d.mkdir()
                        mine = sum(psutil.Process().cpu_times()[:2])
                        await asyncio.gather(*(_bare(model.url, d, bare) for d in dirs))
                        bare.bench_cpu = sum(psutil.Process().cpu_times()[:2]) - mine
                        stop.set()
                        await sampler
                        cids = [await new_conversation(http, headers) for _ in range(size)]
                        before = sum(psutil.Process(service.pid).cpu_times()[:2])
                        mine = sum(psutil.Process().cpu_times()[:2])
                        stop = asyncio.Event()
                        sampler = asyncio.create_task(
                            _peak(psutil.Process(service.pid), through, stop)
                        )
                        runs: list[str] = []
                        await asyncio.gather(
                            *(_service(http, headers, cid, through, runs) for cid in cids)
                        )
                        stop.set()
                        await sampler
                        through.cpu = sum(psutil.Process(service.pid).cpu_times()[:2]) - before
                        through.bench_cpu = sum(psutil.Process().cpu_times()[:2]) - mine
                        async with engine.connect() as conn:
                            through.persisted = int(
                                await conn.scalar(
                                    text(
                                        "SELECT count(*) FROM run_events WHERE run_id = ANY("
                                        "CAST(:ids AS uuid[])) AND type <> 'ping'"
                                    ),
                                    {"ids": runs},
                                )
                                or 0
                            )
                        results[size] = (bare, through)
                        print(f"N={size}", flush=True)
                        print(_line("bare", bare), flush=True)
                        print(_line("service", through), flush=True)
            finally:
                service.terminate()
                service.wait(timeout=120)
        await engine.dispose()
    finally:
        model.stop()
        stop_server()
    print("ratios, service / bare SDK:")
    for size, (bare, through) in results.items():
        ttft = _p(through.first, 0.95) / _p(bare.first, 0.95)
        lag = _p(through.lags, 0.99) / _p(bare.lags, 0.99)
        print(f"  N={size:<4} first text p95 {ttft:5.2f}   lag p99 {lag:5.2f}")


def _p(values: list[float], share: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


if __name__ == "__main__":
    asyncio.run(main())
