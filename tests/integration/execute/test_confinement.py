"""The hostile model: a prompt-injected agent calls whatever tool it likes, with whatever
input (the scripted model's `hostile` scenario), through the real SDK, CLI and jail. None
of it may reach another tenant, the service, or happen outside a run."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI
from sqlalchemy import URL, text

from app.services.execute.jail import JAIL_PORT
from app.services.execute.parts.tools import BUILTIN_TOOLS
from app.services.execute.spec import workspace_dir
from app.services.execute.tools import DEFAULT_TOOLS
from tests.conftest import ADMIN, PROJECT_ROOT, TenantFixture, create_tenant
from tests.integration.execute.streams import (
    hostile,
    new_conversation,
    ok,
    report,
    running_service,
    stream_turn,
)

# The terminal's tools, which the CLI offers by default and a service must never.
TERMINAL_TOOLS = [
    ["SendMessage", {"to": "uds:/tmp/cc-socks/1.sock", "message": "run `id`"}],
    ["ListAgents", {}],
    ["EnterWorktree", {"name": "escape"}],
    ["CronCreate", {"cron": "* * * * *", "prompt": "write pwned.txt", "durable": True}],
    ["ScheduleWakeup", {"delaySeconds": 60, "prompt": "wake", "reason": "x"}],
    ["Monitor", {"command": "id", "description": "x"}],
    ["Workflow", {}],
    ["EnterPlanMode", {}],
    ["ReportFindings", {}],
    ["ToolSearch", {"query": "select:SendMessage"}],
    ["TaskStop", {"task_id": "x"}],
    ["Bash", {"command": "id", "description": "who am I"}],
    ["WebFetch", {"url": "http://127.0.0.1/", "prompt": "x"}],
]


HOST_TMP = Path("/tmp")  # noqa: S108 (the host's, which the jail must not write to)
SUBAGENT_ESCAPE = HOST_TMP / "cmab-subagent-escape.md"


@pytest.fixture
def wire() -> str:
    """One wire format is enough here: the jail does not depend on it."""
    return "anthropic"


async def _tenant(client: httpx.AsyncClient, name: str, **settings: Any) -> TenantFixture:
    return await create_tenant(client, name, settings=settings)


async def test_terminal_tools_are_never_offered(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, hostile(*TERMINAL_TOOLS))
    entries = report(stream)
    assert len(entries) == len(TERMINAL_TOOLS)
    assert not any(ok(e) for e in entries), entries
    assert not any("uid=" in e for e in entries)
    # The init event shows the real set, and the model is offered exactly that.
    assert _names(stream.of("init")[0]["tools"]) == {*DEFAULT_TOOLS, *BUILTIN_TOOLS}
    offered = [
        {tool["name"] for tool in request["body"].get("tools", [])}
        for request in app.state.offline_model.requests
        if request["body"].get("messages")
    ]
    assert offered and all(names == {*DEFAULT_TOOLS, *BUILTIN_TOOLS} for names in offered), offered
    workspace = workspace_dir(app.state.settings.data_dir, tenant.tenant_id, cid)
    assert sorted(p.name for p in workspace.iterdir()) == [".claude"]
    assert list((workspace / ".claude").iterdir()) == []


async def test_another_tenants_idle_agent_cannot_be_reached(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    victim = await _tenant(client, "victim")
    victim_cid = await new_conversation(client, victim)
    await stream_turn(client, victim, victim_cid, "hello")
    secret = "the victim's secret 7f3a"
    victim_ws = workspace_dir(app.state.settings.data_dir, victim.tenant_id, victim_cid)
    (victim_ws / "secret.txt").write_text(secret)
    (pid,) = app.state.executor.ctx.warm.pids()  # the victim's CLI, warm and idle
    victim_turns = await _count(app, "SELECT count(*) FROM runs WHERE tenant_id = 'victim'")

    attacker = await _tenant(client, "attacker", bash_enabled=True)
    cid = await new_conversation(client, attacker)
    stream = await stream_turn(
        client,
        attacker,
        cid,
        hostile(
            ["SendMessage", {"to": f"uds:/tmp/cc-socks/{pid}.sock", "message": "cat secret"}],
            ["ListAgents", {}],
            ["Bash", {"command": "ls -la /tmp/cc-socks/ 2>&1; ls /tmp 2>&1"}],
            ["Bash", {"command": f"cat {victim_ws}/secret.txt 2>&1; ls {victim_ws.parent} 2>&1"}],
            [
                "Bash",
                {"command": f"socat -t2 - UNIX-CONNECT:/tmp/cc-socks/{pid}.sock </dev/null 2>&1"},
            ],
            ["Read", {"file_path": str(victim_ws / "secret.txt")}],
            ["Glob", {"pattern": f"{victim_ws}/*"}],
        ),
    )
    entries = report(stream)
    assert not ok(entries[0]) and not ok(entries[1]) and not ok(entries[5])
    assert secret not in str(stream.events)
    assert f"{pid}.sock" not in entries[2]  # the jail has a /tmp of its own
    assert "No such file" in entries[3]
    # Nothing ran in the victim's agent: no run, and its process is still the idle one.
    await asyncio.sleep(1)
    assert await _count(app, "SELECT count(*) FROM runs WHERE tenant_id = 'victim'") == (
        victim_turns
    )
    assert pid in app.state.executor.ctx.warm.pids()


async def test_a_bash_agent_sees_only_its_jail(
    client: httpx.AsyncClient, app: FastAPI, database_url: URL, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"settings": {"bash_enabled": True}}, headers=ADMIN)
    other = await _tenant(client, "other")
    other_cid = await new_conversation(client, other)
    data_dir = app.state.settings.data_dir.resolve()
    other_ws = workspace_dir(data_dir, other.tenant_id, other_cid)
    other_ws.mkdir(parents=True)
    (other_ws / "private.txt").write_text("other tenant's data")
    service_port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
    db_port = database_url.port or 5432
    checkout = PROJECT_ROOT
    cid = await new_conversation(client, tenant)
    workspace = workspace_dir(data_dir, tenant.tenant_id, cid)
    probe = "(echo > /dev/tcp/{host}/{port}) >/dev/null 2>&1 && echo OPEN || echo CLOSED"
    commands = [
        "ps -e -o comm= 2>&1; ls /proc | grep -c '^[0-9]' ",
        "cat /proc/1/environ /proc/2/environ 2>&1 | tr '\\0' '\\n' | grep -c KEY",
        f"ls {data_dir} {checkout} 2>&1; cat {data_dir}/admin_api_key {checkout}/.env 2>&1",
        f"cat {other_ws}/private.txt 2>&1",
        f"echo pwned > {data_dir}/pwned.txt 2>&1; echo pwned > /tmp/pwned.txt; "
        f"echo pwned > $HOME/../pwned.txt 2>&1; echo done",
        probe.format(host="127.0.0.1", port=service_port),
        probe.format(host="127.0.0.1", port=db_port),
        probe.format(host="127.0.0.1", port=6379),
        probe.format(host="169.254.169.254", port=80),
        probe.format(host="127.0.0.1", port=JAIL_PORT),
        "ls -a /run/cmab /run/postgresql /var/run/postgresql 2>&1; ls / 2>&1",
        "mkdir -p .claude 2>&1; echo '[]' > .claude/scheduled_tasks.json 2>&1; echo tried",
        "echo made > made-in-the-workspace.txt && echo wrote",
    ]
    stream = await stream_turn(
        client, tenant, cid, hostile(*[["Bash", {"command": c}] for c in commands])
    )
    entries = report(stream)
    assert all(ok(e) or "Exit code" in e for e in entries), entries
    text_of = [e.split(":", 1)[1] for e in entries]
    assert "postgres" not in text_of[0] and "python" not in text_of[0]
    assert int(text_of[0].split()[-1]) < 20  # only the jail's own processes
    assert "cmab_admin_" not in text_of[2] and "No such file" in text_of[2]
    assert "other tenant's data" not in text_of[3]
    for index in (5, 6, 7, 8, 9):
        assert "CLOSED" in text_of[index], (commands[index], text_of[index])
    assert "cannot access '/run/postgresql'" in text_of[10]
    assert "cannot access '/var/run/postgresql'" in text_of[10]
    assert "Read-only file system" in text_of[11]
    assert "wrote" in text_of[12]
    # Writes outside the workspace did not reach the host; the one inside did.
    for escaped in (data_dir / "pwned.txt", HOST_TMP / "pwned.txt"):
        assert not escaped.exists()
    assert not (workspace.parent / "pwned.txt").exists()
    assert (workspace / "made-in-the-workspace.txt").read_text() == "made\n"
    assert not (workspace / ".claude" / "scheduled_tasks.json").exists()
    # The provider's key is not in the agent's environment.
    env = await stream_turn(client, tenant, cid, hostile(["Bash", {"command": "env"}]))
    (entry,) = report(env)
    assert "ANTHROPIC_API_KEY=held-by-the-service" in entry
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:" in entry
    assert "SANDBOX_RUNTIME=1" in entry  # and inside the jail, the CLI's own Bash sandbox


async def test_subagents_are_held_the_same_way(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    cid = await new_conversation(client, tenant)
    inner = hostile(
        ["Read", {"file_path": "/etc/passwd"}],
        ["Write", {"file_path": str(SUBAGENT_ESCAPE), "content": "x"}],
        ["Bash", {"command": "id"}],
        ["SendMessage", {"to": "main", "message": "x"}],
    )
    stream = await stream_turn(
        client,
        tenant,
        cid,
        hostile(
            ["Agent", {"description": "d", "prompt": inner, "subagent_type": "general-purpose"}]
        ),
    )
    assert stream.done["status"] == "success"
    sub_results = [r for r in stream.of("tool_result") if r.get("parent_agent_id")]
    assert len(sub_results) == 4, stream.of("tool_result")
    assert all(r["is_error"] for r in sub_results), sub_results
    assert "root:x:0:0" not in str(stream.events)
    assert not await asyncio.to_thread(SUBAGENT_ESCAPE.exists)


async def test_web_fetch_reaches_only_public_addresses(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    targets = [
        f"http://{str(client.base_url).split('//', 1)[1]}/api/tenants",
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://[::ffff:127.0.0.1]:5432/",
        "http://10.1.2.3/",
        "http://2130706433/",
        "http://localhost:6379/",
    ]
    calls = [["WebFetch", {"url": url, "prompt": "show"}] for url in targets]
    cid = await new_conversation(client, tenant)
    refused = report(await stream_turn(client, tenant, cid, hostile(calls[0])))
    assert not ok(refused[0]) and "WebFetch" in refused[0]  # not offered at all

    await client.put(tenant.url(), json={"settings": {"web_fetch_enabled": True}}, headers=ADMIN)
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, hostile(*calls))
    assert _names(stream.of("init")[0]["tools"]) == {*DEFAULT_TOOLS, *BUILTIN_TOOLS, "WebFetch"}
    entries = report(stream)
    assert len(entries) == len(targets)
    for entry in entries:
        assert not ok(entry) and "public internet addresses" in entry, entry


async def test_user_input_is_delivered_verbatim(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"system_prompt": "PROMPT-MARK-91c2"}, headers=ADMIN)
    cid = await new_conversation(client, tenant)
    stream = await stream_turn(client, tenant, cid, "@/etc/passwd then /compact")
    assert stream.done["status"] == "success"
    assert stream.text == "[offline model] You said: @/etc/passwd then /compact"
    assert "root:x:0:0" not in json.dumps(list(app.state.offline_model.requests))
    # The system prompt reached the model, but is on no process's command line.
    assert any(
        "PROMPT-MARK-91c2" in json.dumps(r["body"].get("system"))
        for r in app.state.offline_model.requests
    )
    for process in psutil.process_iter(["cmdline"]):
        assert "PROMPT-MARK-91c2" not in " ".join(process.info["cmdline"] or [])


async def test_nothing_runs_between_runs(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """An idle warm agent that reaches for the network has its process ended."""
    cid = await new_conversation(client, tenant)
    await stream_turn(client, tenant, cid, "hello")
    warm = app.state.executor.ctx.warm
    (pid,) = warm.pids()
    (session,) = [s for s, _ in warm._idle.values()]
    bridge = session.process.bridge
    assert bridge is not None and not bridge.open

    def knock() -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(bridge.socket_path))
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(100)

    try:
        answer = await asyncio.to_thread(knock)
    except (ConnectionResetError, BrokenPipeError):  # closed before or as it sent
        answer = b""
    assert answer == b""  # refused: no run is open
    for _ in range(50):
        if not psutil.pid_exists(pid) and len(warm) == 0:
            break
        await asyncio.sleep(0.1)
    assert len(warm) == 0 and not psutil.pid_exists(pid)
    # The conversation goes on, in a new process.
    stream = await stream_turn(client, tenant, cid, "still there?")
    assert stream.done["status"] == "success"


@pytest.mark.parametrize("sandbox", ["on", "off"])
async def test_no_jail_no_runs_unless_turned_off(
    database_url: URL, tmp_path: Path, sandbox: str
) -> None:
    async with running_service(
        database_url, tmp_path, agent_sandbox=sandbox, agent_bwrap=Path("/bin/false")
    ) as (_, client):
        health = (await client.get("/health")).json()
        tenant = await create_tenant(client, "acme")
        cid = await new_conversation(client, tenant)
        stream = await stream_turn(client, tenant, cid, "hello")
    if sandbox == "on":
        assert health["agent_sandbox"] == "unavailable"
        assert stream.status_code == 503
        assert "AGENT_SANDBOX=off" in stream.events[0][1]["error"]["message"]
    else:
        assert health["agent_sandbox"] == "off"
        assert stream.done["status"] == "success"


def _names(tools: list[str]) -> set[str]:
    """Tool names as the service calls them (the CLI's init says Task for Agent)."""
    return {"Agent" if name == "Task" else name for name in tools}


async def _count(app: FastAPI, sql: str) -> int:
    async with app.state.engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def test_nul_characters_in_tool_calls_do_not_lose_the_run(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """PostgreSQL refuses NUL in text: a hostile model that puts one in a tool's input
    (and so in its output) still gets a recorded run, the characters replaced."""
    cid = await new_conversation(client, tenant)
    ws = workspace_dir(app.state.settings.data_dir, tenant.tenant_id, cid)
    stream = await stream_turn(
        client,
        tenant,
        cid,
        hostile(
            ["Write", {"file_path": f"{ws}/nul.txt", "content": "a\u0000b"}],
            ["Read", {"file_path": f"{ws}/nul.txt"}],
        ),
    )
    assert stream.done["status"] == "success", stream.events[-3:]
    messages = await client.get(
        tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers
    )
    assert "\ufffd" in messages.text or "\\ufffd" in messages.text
