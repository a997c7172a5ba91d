"""Many nodes, measured in one run: node A runs the agents (api,worker), node B only
serves the API; both on one database. For the same run on A:

- event delivery lag (client arrival - the owner's emit time) of a follower on B vs a
  follower on A, over paced answers (50 text deltas a second)   target B p99 <= 50 ms
- events per second of a follower on B vs on A, over a fast answer  target B/A >= 0.8

and how fast runs start: the time from the stream request to the run's first event,
through the queue (a job claimed by the worker) vs started directly by the executor in
the same process (no queue), over the same scripted model.

Run: `uv run python -m bench.nodes`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
from fastapi import FastAPI
from httpx_sse import aconnect_sse
from pydantic import SecretStr
from sqlalchemy import update

from app.config import Settings
from app.main import create_app
from app.models import Run
from app.schemas.runs import StreamRequest
from app.services import runs as run_service
from app.services.execute.executor import Claim
from app.services.execute.spec import RunInputs
from app.services.scope import TenantScope
from bench.common import ADMIN_KEY, fresh_database, server_url
from bench.runs import bench_tenant
from tests.integration.live_server import serve_in_loop, spawn_service

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
PACED = "scenario:paced:300x20"
FAST = f"scenario:text:{os.environ.get('BENCH_CHUNKS', '20000')}"
SECRET = "bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 (a bench's own)


def _node(url: str, data_dir: Path, roles: str) -> tuple[subprocess.Popen[bytes], str]:
    data_dir.mkdir(parents=True)
    return spawn_service(
        {
            "DATABASE_URL": url,
            "DB_AUTO_MIGRATE": "false",
            "ADMIN_API_KEYS": ADMIN_KEY,
            "SECRET_KEY": SECRET,
            "DATA_DIR": str(data_dir),
            "LOG_LEVEL": "WARNING",
            "MODEL_PROVIDER": "offline",
            "NODE_ROLES": roles,
            "MAX_WARM_SESSIONS": "0",
        }
    )


async def _follow(
    http: httpx.AsyncClient, headers: dict[str, str], run_id: str
) -> tuple[list[float], float, int]:
    """Follow a run from its start: each text delta's lag, the span from the first to
    the last event, and how many events came."""
    lags: list[float] = []
    first = last = 0.0
    count = 0
    async with aconnect_sse(
        http, "GET", f"/api/tenants/bench/runs/{run_id}/events", headers=headers, timeout=300
    ) as source:
        async for sse in source.aiter_sse():
            now = time.time()
            if sse.event == "ping":
                continue
            count += 1
            first = first or time.perf_counter()
            last = time.perf_counter()
            if sse.event == "text_delta":
                sent = datetime.fromisoformat(json.loads(sse.data)["timestamp"]).timestamp()
                lags.append(now - sent)
    return lags, last - first, count


async def _one_run(
    a: httpx.AsyncClient, b: httpx.AsyncClient, headers: dict[str, str], prompt: str
) -> dict[str, tuple[list[float], float, int]]:
    """A run started through A; a follower on A and one on B, from its start."""
    cid = (await a.post("/api/tenants/bench/conversations", json={}, headers=headers)).json()[
        "conversation_id"
    ]
    opened = asyncio.get_running_loop().create_future()

    async def own_stream() -> None:
        async with a.stream(
            "POST",
            f"/api/tenants/bench/conversations/{cid}/stream",
            json={"user_input": prompt},
            headers=headers,
        ) as response:
            opened.set_result(response.headers["x-run-id"])
            async for _ in response.aiter_bytes():
                pass

    owner = asyncio.create_task(own_stream())
    run_id = await opened
    on_a, on_b = await asyncio.gather(_follow(a, headers, run_id), _follow(b, headers, run_id))
    await owner
    return {"A": on_a, "B": on_b}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def _start_times(url: str, data_dir: Path) -> dict[str, float]:
    """Median time from asking for a run to its first event: through the queue (HTTP to
    this process, a job its worker claims) and directly (the executor, same process)."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=SecretStr(url),
        db_auto_migrate=False,
        admin_api_keys=[SecretStr(ADMIN_KEY)],
        secret_key=SecretStr(SECRET),
        data_dir=data_dir,
        log_level="WARNING",
        model_provider="offline",
        max_warm_sessions=0,
    )
    app = create_app(settings)
    times: dict[str, list[float]] = {"queue": [], "direct": []}
    async with (
        app.router.lifespan_context(app),
        serve_in_loop(app) as base,
        httpx.AsyncClient(base_url=base, timeout=60) as http,
    ):
        headers = await bench_tenant(http, "starts")
        scope = TenantScope("starts")
        for _ in range(ROUNDS * 4):
            cid = (
                await http.post("/api/tenants/starts/conversations", json={}, headers=headers)
            ).json()["conversation_id"]
            began = time.perf_counter()
            async with http.stream(
                "POST",
                f"/api/tenants/starts/conversations/{cid}/stream",
                json={"user_input": "hi"},
                headers=headers,
            ) as response:
                async for chunk in response.aiter_bytes():
                    if b"event:" in chunk:
                        times["queue"].append(time.perf_counter() - began)
                        break
            await _settle(app, response.headers["x-run-id"])

            cid = (
                await http.post("/api/tenants/starts/conversations", json={}, headers=headers)
            ).json()["conversation_id"]
            began = time.perf_counter()
            async with app.state.sessionmaker() as session, session.begin():
                run = await run_service.queue_run(
                    session,
                    scope,
                    uuid.UUID(cid),
                    StreamRequest(user_input="hi"),
                    None,
                    max_input_chars=1000,
                )
                claim = Claim(run.run_id, "starts", run.conversation_id, run.created_at)
            await _update_node(app, run.run_id)
            app.state.executor.start(claim, RunInputs())
            events = app.state.executor.live_events(run.run_id)
            await events.after(0, wait_seconds=30)
            times["direct"].append(time.perf_counter() - began)
            await _settle(app, str(run.run_id))
    return {name: statistics.median(values) for name, values in times.items()}


async def _update_node(app: FastAPI, run_id: uuid.UUID) -> None:
    """The run is this node's, as claiming it from the queue would make it."""
    state = app.state
    async with state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Run).where(Run.run_id == run_id).values(node_id=state.cluster.node_id)
        )


async def _settle(app: FastAPI, run_id: str) -> None:
    """Until the run has ended (the next one starts on a quiet node)."""
    state = app.state
    scope = TenantScope("starts")
    for _ in range(600):
        async with state.sessionmaker() as session:
            found = await run_service.run_state(session, scope, uuid.UUID(run_id))
        if found is not None and found[0] not in ("queued", "running"):
            return
        await asyncio.sleep(0.05)


async def main() -> None:
    server, stop_server = server_url()
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        url = (await fresh_database(server, "cmab_bench_nodes")).render_as_string(
            hide_password=False
        )
        with tempfile.TemporaryDirectory() as scratch:
            node_a, base_a = _node(url, Path(scratch) / "a", "api,worker")
            nodes.append(node_a)
            node_b, base_b = _node(url, Path(scratch) / "b", "api")
            nodes.append(node_b)
            async with (
                httpx.AsyncClient(base_url=base_a, timeout=300) as a,
                httpx.AsyncClient(base_url=base_b, timeout=300) as b,
            ):
                headers = await bench_tenant(a)
                await _one_run(a, b, headers, "warm up")
                lags: dict[str, list[float]] = {"A": [], "B": []}
                rates: dict[str, list[float]] = {"A": [], "B": []}
                for _ in range(ROUNDS):
                    for node, (lag, _, _) in (await _one_run(a, b, headers, PACED)).items():
                        lags[node].extend(lag)
                for _ in range(ROUNDS):
                    for node, (_, span, count) in (await _one_run(a, b, headers, FAST)).items():
                        rates[node].append(count / span)
            for node in nodes:
                node.terminate()
                node.wait(timeout=60)
            nodes.clear()
            starts = await _start_times(url, Path(scratch) / "c")
        print(f"follower lag over {PACED} x {ROUNDS} (client arrival - owner's emit):")
        for node, label in (("A", "on the owner (A)"), ("B", "on another node (B)")):
            values = lags[node]
            print(
                f"  {label:<22} p50 {_percentile(values, 0.5) * 1000:6.1f} ms"
                f"  p99 {_percentile(values, 0.99) * 1000:6.1f} ms  ({len(values)} deltas)"
            )
        p99 = _percentile(lags["B"], 0.99)
        print(f"  B p99 target <= 50 ms: {'OK' if p99 <= 0.05 else 'MISSED'}")
        rate_a, rate_b = statistics.median(rates["A"]), statistics.median(rates["B"])
        print(f"events per second following {FAST} (median of {ROUNDS}):")
        print(f"  on the owner (A) {rate_a:9.0f}/s   on another node (B) {rate_b:9.0f}/s")
        ratio = rate_b / rate_a
        print(f"  B/A {ratio:.3f} (target >= 0.8): {'OK' if ratio >= 0.8 else 'MISSED'}")
        print("time from asking for a run to its first event (median):")
        print(f"  through the queue {starts['queue'] * 1000:7.1f} ms")
        print(f"  directly          {starts['direct'] * 1000:7.1f} ms")
        print(
            f"  runs started per second, queue vs direct: {1 / starts['queue']:.1f} vs "
            f"{1 / starts['direct']:.1f} (ratio {starts['direct'] / starts['queue']:.3f})"
        )
    finally:
        for node in nodes:
            node.kill()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
