"""Skills in runs, through the real SDK, CLI and jail: the Skill tool loads the tenant's
SKILL.md, the agent reads (never writes) a skill's files, `/commands` run their skill,
preferred skills reach the model, and another tenant's skills are never seen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.services.execute.skillset import skillset_dir
from tests.conftest import ADMIN, TenantFixture, assert_error, create_tenant
from tests.integration.execute.streams import hostile, new_conversation, ok, report, stream_turn

BODY = "INSTRUCTIONS-OF-ACME for $ARGUMENTS: run scripts/totals.sh"
SCRIPT = "#!/bin/sh\necho TOTALS-42\n"


@pytest.fixture
def wire() -> str:
    return "anthropic"


def skill_md(body: str = BODY) -> str:
    return f"---\nname: quarterly-report\ndescription: ACME-DESCRIPTION quarterly.\n---\n{body}\n"


async def _add_skill(client: httpx.AsyncClient, tenant: TenantFixture, body: str = BODY) -> None:
    files = {"SKILL.md": skill_md(body), "scripts/totals.sh": SCRIPT}
    response = await client.post(
        tenant.url("/skills"),
        json={"files": files, "slash_command": "report"},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text


async def _skillset(app: FastAPI, tenant_id: str) -> Path:
    async with app.state.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT s.name, v.version, v.digest FROM skills s JOIN skill_versions v"
                    " ON v.skill_id = s.skill_id AND v.version = s.current_version"
                    " WHERE s.tenant_id = :t AND s.status = 'active' ORDER BY s.name"
                ),
                {"t": tenant_id},
            )
        ).all()
    return skillset_dir(app.state.settings.data_dir, tenant_id, [tuple(r) for r in rows])


def _requests(app: FastAPI) -> list[dict[str, Any]]:
    return [r["body"] for r in app.state.offline_model.requests if r["body"].get("messages")]


async def _run(client: httpx.AsyncClient, tenant: TenantFixture, run_id: str) -> dict[str, Any]:
    response = await client.get(tenant.url(f"/runs/{run_id}"), headers=tenant.headers)
    return dict(response.json())


async def test_the_agent_loads_a_skill_and_reads_but_never_writes_its_files(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await client.put(tenant.url(), json={"settings": {"bash_enabled": True}}, headers=ADMIN)
    await _add_skill(client, tenant)
    skillset = await _skillset(app, tenant.tenant_id)
    script = skillset / "skills" / "quarterly-report" / "scripts" / "totals.sh"
    cid = await new_conversation(client, tenant)
    app.state.offline_model.requests.clear()
    stream = await stream_turn(
        client,
        tenant,
        cid,
        hostile(
            ["Skill", {"skill": "tenant:quarterly-report", "args": "Q3"}],
            ["Read", {"file_path": str(script)}],
            ["Bash", {"command": f"sh {script}"}],
            ["Write", {"file_path": str(script), "content": "echo pwned"}],
            ["Edit", {"file_path": str(script), "old_string": "TOTALS", "new_string": "X"}],
            ["Bash", {"command": f"echo pwned > {script}"}],
            ["Skill", {"skill": "tenant:no-such-skill"}],
        ),
    )
    entries = report(stream)
    assert [ok(e) for e in entries] == [True, True, True, False, False, False, False], entries
    assert "TOTALS-42" in entries[1] and "TOTALS-42" in entries[2]
    assert script.read_text() == SCRIPT  # read-only to the agent, whatever it tries
    # The tool's result carried the tenant's instructions, and the model's next request
    # shows them, with the arguments in place.
    later = json.dumps(_requests(app)[1:])
    assert "INSTRUCTIONS-OF-ACME for Q3" in later
    # The model was told of the skill (name and description) from the first request on.
    assert "ACME-DESCRIPTION" in json.dumps(_requests(app)[0])
    run = await _run(client, tenant, stream.done["run_id"])
    assert run["skill_versions"] == {"quarterly-report": 1}


async def test_slash_commands_and_preferred_skills(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await _add_skill(client, tenant)
    cid = await new_conversation(client, tenant)
    app.state.offline_model.requests.clear()
    stream = await stream_turn(client, tenant, cid, "/report Q3 for Europe")
    assert stream.done["status"] == "success", stream.events[-3:]
    sent = json.dumps(_requests(app)[0]["messages"][-1])
    assert "INSTRUCTIONS-OF-ACME for Q3 for Europe" in sent
    assert "Base directory for this skill:" in sent
    run = await _run(client, tenant, stream.done["run_id"])
    assert run["command"] == "quarterly-report" and run["user_input"] == "/report Q3 for Europe"
    messages = await client.get(
        tenant.url(f"/conversations/{cid}/messages"), headers=tenant.headers
    )
    assert messages.json()["items"][0]["content"][0]["text"] == "/report Q3 for Europe"

    # Not commands: `//text` and a leading space go as they are.
    for text_input in ("//report as text", " /report as text"):
        app.state.offline_model.requests.clear()
        plain = await stream_turn(client, tenant, cid, text_input)
        assert plain.done["status"] == "success"
        assert text_input in json.dumps(_requests(app)[0]["messages"][-1])
        assert (await _run(client, tenant, plain.done["run_id"]))["command"] is None

    # Unknown and disabled commands start no run.
    unknown = await stream_turn(client, tenant, cid, "/nope do it")
    assert_error_stream(unknown, "UNKNOWN_COMMAND")
    await client.patch(
        tenant.url("/skills/quarterly-report"),
        json={"is_user_selectable": False},
        headers=tenant.headers,
    )
    hidden = await stream_turn(client, tenant, cid, "/report Q3")
    assert_error_stream(hidden, "UNKNOWN_COMMAND")

    # Preferred skills reach the model for that turn, and are recorded; unknown ones: 422.
    app.state.offline_model.requests.clear()
    preferred = await stream_turn(
        client, tenant, cid, "Summarise the quarter", preferred_skills=["quarterly-report"]
    )
    assert "use these skills first where they apply: tenant:quarterly-report" in json.dumps(
        _requests(app)[0]["messages"][-1]
    )
    assert (await _run(client, tenant, preferred.done["run_id"]))["preferred_skills"] == [
        "quarterly-report"
    ]
    await client.patch(
        tenant.url("/skills/quarterly-report"), json={"status": "disabled"}, headers=tenant.headers
    )
    refused = await stream_turn(client, tenant, cid, "Hi", preferred_skills=["quarterly-report"])
    assert_error_stream(refused, "UNKNOWN_SKILL")


def assert_error_stream(stream: Any, code: str) -> None:
    assert stream.status_code == 422, stream.events
    assert stream.events[0][1]["error"]["code"] == code


async def test_a_new_version_is_used_by_the_next_run(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await _add_skill(client, tenant)
    cid = await new_conversation(client, tenant)
    load = hostile(["Skill", {"skill": "tenant:quarterly-report", "args": "Q3"}])
    first = await stream_turn(client, tenant, cid, load)
    assert app.state.executor.ctx.warm.holds(cid)
    files = {"SKILL.md": skill_md("VERSION-TWO for $ARGUMENTS"), "scripts/totals.sh": SCRIPT}
    updated = await client.put(
        tenant.url("/skills/quarterly-report"), json={"files": files}, headers=tenant.headers
    )
    assert updated.json()["current_version"] == 2
    # The idle agent process, made with version 1, was retired with the change.
    assert not app.state.executor.ctx.warm.holds(cid)
    app.state.offline_model.requests.clear()
    second = await stream_turn(client, tenant, cid, load)
    assert "VERSION-TWO for Q3" in json.dumps(_requests(app))
    assert "INSTRUCTIONS-OF-ACME" not in json.dumps(_requests(app)[-1]["messages"][-1])
    assert (await _run(client, tenant, first.done["run_id"]))["skill_versions"] == {
        "quarterly-report": 1
    }
    assert (await _run(client, tenant, second.done["run_id"]))["skill_versions"] == {
        "quarterly-report": 2
    }


async def test_another_tenants_skills_are_never_seen(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    await _add_skill(client, tenant)
    acme_skills = await _skillset(app, tenant.tenant_id)
    await stream_turn(client, tenant, await new_conversation(client, tenant), "hello")
    assert acme_skills.is_dir()

    globex = await create_tenant(client, "globex", settings={"bash_enabled": True})
    cid = await new_conversation(client, globex)
    app.state.offline_model.requests.clear()
    script = acme_skills / "skills" / "quarterly-report" / "scripts" / "totals.sh"
    stream = await stream_turn(
        client,
        globex,
        cid,
        hostile(
            ["Skill", {"skill": "tenant:quarterly-report"}],
            ["Skill", {"skill": "quarterly-report"}],
            ["Read", {"file_path": str(script)}],
            ["Glob", {"pattern": f"{acme_skills}/**"}],
            ["Bash", {"command": f"cat {script}; ls {acme_skills.parent}"}],
        ),
    )
    entries = report(stream)
    leaks = ("TOTALS", "INSTRUCTIONS-OF-ACME", "ACME-DESCRIPTION")
    assert not any(leak in e for e in entries for leak in leaks), entries
    assert "No such file" in entries[4]  # the other tenant's folder is not in this jail
    assert not any(ok(e) for e in entries[:4]), entries
    seen = json.dumps(_requests(app))
    assert "ACME-DESCRIPTION" not in seen and "INSTRUCTIONS-OF-ACME" not in seen
    assert await client.get(globex.url("/slash-commands"), headers=globex.headers)
    command = await stream_turn(client, globex, cid, "/report Q3")
    assert_error_stream(command, "UNKNOWN_COMMAND")
    assert_error(
        await client.get(globex.url("/skills/quarterly-report"), headers=globex.headers),
        404,
        "NOT_FOUND",
    )


async def test_a_skill_cannot_run_shell_commands_as_it_loads(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    """Claude Code runs a skill's inline `!`command`` when the skill loads (with Bash,
    whatever the tool set): not here, even with Bash on."""
    await client.put(tenant.url(), json={"settings": {"bash_enabled": True}}, headers=ADMIN)
    await _add_skill(client, tenant, body="Totals: !`echo SHELL-RAN-$((6*7))` for $ARGUMENTS")
    cid = await new_conversation(client, tenant)
    app.state.offline_model.requests.clear()
    stream = await stream_turn(
        client, tenant, cid, hostile(["Skill", {"skill": "tenant:quarterly-report", "args": "Q3"}])
    )
    assert stream.done["status"] == "success"
    assert "SHELL-RAN-42" not in json.dumps(_requests(app))
