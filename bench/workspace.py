"""Workspace sync, measured in one run:

- a workspace of 1,000 files where a run changed one: uploads and time, against recording
  all 1,000 (a full upload)                                         target: 1 upload
- the time to bring an empty cache up to date with 1,000 files
- time to the first text event of a turn on a conversation with 1,000 files (up to date
  on this node) against one with none, through the service        target ratio <= 1.05

Run: `uv run python -m bench.workspace`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from app.config import StorageSettings
from app.services.execute.offline_model import OfflineModelServer
from app.services.execute.sync import sync_down, sync_up
from app.services.storage import ObjectStore, create_store
from app.services.workspace import FileCaps
from bench.common import fresh_database, server_url
from bench.runs import (
    bench_tenant,
    interleaved_ttft,
    new_conversation,
    print_ratio,
    service_turn,
    start_service,
)

FILES = int(os.environ.get("BENCH_FILES", "1000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "15"))
MAX_FILE = 10 * 1024 * 1024


class CountingStore:
    """The store, counting what is put into it."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.puts = 0

    async def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        await self.store.put(key, data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


async def bench_sync(url: str, scratch: Path) -> None:
    engine = create_async_engine(url)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    cid = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO tenants (tenant_id, name, default_model_id, settings, status)"
                " VALUES ('sync', 'Sync', 'claude-sonnet-4-5', '{}', 'active')"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO conversations (conversation_id, tenant_id, model_id, metadata, status)"
                " VALUES (:c, 'sync', 'claude-sonnet-4-5', '{}', 'active')"
            ),
            {"c": cid},
        )
    await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
    store = CountingStore(create_store(StorageSettings(root=scratch / "objects"), scratch))
    workspace, manifest = scratch / "ws", scratch / "manifest.json"
    for n in range(FILES):
        folder = workspace / f"d{n % 20}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{n}.txt").write_text(f"file {n}\n" * 20)
    run = uuid.uuid4()

    async def record() -> float:
        started = time.perf_counter()
        await sync_up(
            maker,
            store,
            "sync",
            cid,
            workspace,
            manifest,
            run_id=run,  # type: ignore[arg-type]
            user_id=None,
            caps=FileCaps(MAX_FILE),
        )
        return time.perf_counter() - started

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO runs (run_id, tenant_id, conversation_id, model_id, status,"
                " user_input, input_tokens, output_tokens, cache_creation_5m_tokens,"
                " cache_creation_1h_tokens, cache_read_tokens, cost_usd, num_turns)"
                " VALUES (:r, 'sync', :c, 'claude-sonnet-4-5', 'running', 'x', 0, 0, 0, 0, 0,"
                " 0, 0)"
            ),
            {"r": run, "c": cid},
        )
    full = await record()
    full_puts, store.puts = store.puts, 0
    (workspace / "d3" / "f3.txt").write_text("changed by the run\n")
    one = await record()
    one_puts = store.puts
    fresh = scratch / "fresh"
    fresh.mkdir()
    started = time.perf_counter()
    await sync_down(maker, store, "sync", cid, fresh, scratch / "fresh.json", -1)  # type: ignore[arg-type]
    down = time.perf_counter() - started
    assert len(list(fresh.rglob("*.txt"))) == FILES
    await engine.dispose()
    print(f"recording a workspace of {FILES} files")
    print(f"  all new (a full upload)    {full * 1000:8.1f} ms, {full_puts} uploads")
    print(
        f"  one changed                {one * 1000:8.1f} ms, {one_puts} upload"
        f"  ({'OK' if one_puts == 1 else 'MISSED'}: target 1), {one / full:.3f} of the time"
    )
    print(f"bringing an empty cache up to date: {down * 1000:8.1f} ms for {FILES} files")


async def bench_first_event(url: str, model_url: str, scratch: Path) -> None:
    service, base = start_service(url, model_url, scratch / "data")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            headers = await bench_tenant(http)
            full, empty = (
                await new_conversation(http, headers),
                await new_conversation(http, headers),
            )
            files = f"/api/tenants/bench/conversations/{full}/files"
            for n in range(FILES):
                put = await http.put(
                    f"{files}/d{n % 20}/f{n}.txt", content=f"file {n}\n".encode(), headers=headers
                )
                put.raise_for_status()
            for cid in (full, empty):  # the first turn brings the cache up to date
                await service_turn(http, headers, "warm up", cid)
            arms = {"files": (headers, full, "bench"), "none": (headers, empty, "bench")}
            ttft = await interleaved_ttft(http, arms, ROUNDS)
        print_ratio(
            f"time to first text event, warm turns (median of {ROUNDS})",
            ("no files", ttft["none"]),
            (f"{FILES} files", ttft["files"]),
            1.05,
        )
    finally:
        service.terminate()
        service.wait(timeout=60)


async def main() -> None:
    server, stop_server = server_url()
    model = OfflineModelServer()
    model.start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            url = await fresh_database(server, "cmab_bench_workspace")
            await bench_sync(url.render_as_string(hide_password=False), Path(scratch) / "sync")
            url = await fresh_database(server, "cmab_bench_workspace_runs")
            await bench_first_event(
                url.render_as_string(hide_password=False), model.url, Path(scratch)
            )
    finally:
        model.stop()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
