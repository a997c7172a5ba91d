"""Skills, measured in one run: the time to the first text event of a turn on a new
conversation (a new agent process each) for a tenant with 50 skills against one with
none, through the service, turns interleaved              target ratio <= 1.05

The skill set's plugin folder is made on the first run that needs it and cached: the
warm-up turn makes it, the measured turns reuse it.

Run: `uv run python -m bench.skills`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import httpx

from app.services.execute.offline_model import OfflineModelServer
from bench.common import fresh_database, server_url
from bench.runs import bench_tenant, interleaved_ttft, print_ratio, service_turn, start_service

SKILLS = int(os.environ.get("BENCH_SKILLS", "50"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "30"))


def _skill(n: int) -> dict[str, object]:
    name = f"skill-{n:02d}"
    body = f"Step {n}: follow the house style for $ARGUMENTS.\n" * 40
    files = {
        "SKILL.md": f"---\nname: {name}\ndescription: Handles task family {n}.\n---\n{body}",
        "reference/notes.md": "Background material.\n" * 200,
        "scripts/run.sh": "#!/bin/sh\necho done\n",
    }
    return {"files": files}


async def main() -> None:
    server, stop_server = server_url()
    model = OfflineModelServer()
    model.start()
    try:
        url = await fresh_database(server, "cmab_bench_skills")
        with tempfile.TemporaryDirectory() as scratch:
            service, base = start_service(
                url.render_as_string(hide_password=False),
                model.url,
                Path(scratch) / "data",
                MAX_WARM_SESSIONS="0",
            )
            try:
                async with httpx.AsyncClient(base_url=base, timeout=300) as http:
                    tenants = {
                        "none": ("plain", await bench_tenant(http, "plain")),
                        "skills": ("bench", await bench_tenant(http, "bench")),
                    }
                    headers = tenants["skills"][1]
                    for n in range(SKILLS):
                        made = await http.post(
                            "/api/tenants/bench/skills", json=_skill(n), headers=headers
                        )
                        made.raise_for_status()
                    for tenant, headers in tenants.values():  # makes the plugin folder
                        await service_turn(http, headers, "warm up", tenant=tenant)
                    arms = {
                        name: (headers, None, tenant) for name, (tenant, headers) in tenants.items()
                    }
                    ttft = await interleaved_ttft(http, arms, ROUNDS)
            finally:
                service.terminate()
                service.wait(timeout=60)
        print_ratio(
            f"time to first text event, new conversations (median of {ROUNDS})",
            ("no skills", ttft["none"]),
            (f"{SKILLS} skills", ttft["skills"]),
            1.05,
        )
    finally:
        model.stop()
        stop_server()


if __name__ == "__main__":
    asyncio.run(main())
