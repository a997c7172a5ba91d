"""Skill pieces without a service: commands as users type them, and SKILL.md as the CLI
gets it."""

from __future__ import annotations

import pytest

from app.services.execute.skillset import cli_skill_md
from app.services.skill_files import split_frontmatter
from app.services.skills import parse_command


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        ("/report Q3", ("report", "Q3")),
        ("/report", ("report", "")),
        ("/report  Q3 \n and Europe", ("report", "Q3 \n and Europe")),
        ("/report\nline two", ("report", "line two")),
        ("/report\tQ3", ("report", "Q3")),
        ("/report\r\nQ3", ("report", "Q3")),
        ("//report as text", None),
        (" /report", None),
        ("report", None),
    ],
)
def test_commands_as_typed(typed: str, parsed: tuple[str, str] | None) -> None:
    assert parse_command(typed) == parsed


def test_the_cli_gets_checked_frontmatter_without_a_model() -> None:
    original = b"---\nname: x\ndescription: 'Does: x'\nmodel: claude-opus-4\n---\nBody $ARGUMENTS\n"
    written = cli_skill_md(original).decode()
    assert written == '---\nname: "x"\ndescription: "Does: x"\n---\nBody $ARGUMENTS\n'
    frontmatter, _ = split_frontmatter(written)
    assert frontmatter == {"name": "x", "description": "Does: x"}


def test_what_an_agent_produced_is_storable() -> None:
    from app.utils.text import storable

    value = {"a\x00": ["x\x00y", "\ud800", 10**30, -(2**63), True, 1.5, None]}
    assert storable(value) == {
        "a\ufffd": ["x\ufffdy", "\ufffd", str(10**30), -(2**63), True, 1.5, None]
    }


def test_secrets_are_redacted_in_every_usual_form() -> None:
    import base64
    import json
    from urllib.parse import quote

    from app.services.mcp.proxy import redact

    secret = 'sk+ab/c=d"x'
    forms = [
        secret,
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        base64.b64encode(secret.encode()).decode(),
    ]
    for form in forms:
        assert secret not in redact(f"<{form}>", [secret]) and "[redacted]" in redact(
            f"<{form}>", [secret]
        )


async def test_placeholders_in_a_url_query_are_encoded() -> None:
    import uuid

    from app.models import McpServer
    from app.services.mcp.servers import plan_servers
    from app.services.scope import TenantScope

    server = McpServer(
        server_id=uuid.uuid4(),
        tenant_id="acme",
        name="crm",
        type="http",
        config={"url": "https://x/mcp?key=${request.k}", "headers": {"A": "${request.k}"}},
        allowed_tools=None,
        timeout_seconds=5.0,
    )
    (plan,) = await plan_servers(
        None,  # type: ignore[arg-type]  # no secrets named: the session is not used
        None,  # type: ignore[arg-type]
        TenantScope("acme"),
        [server],
        tokens={"k": "a&b=c#d"},
        user_id=None,
        conversation_id=None,
    )
    assert plan.config["url"] == "https://x/mcp?key=a%26b%3Dc%23d"
    assert plan.config["headers"] == {"A": "a&b=c#d"}
