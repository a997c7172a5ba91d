"""The permission policy: only the run's tools; file tools stay in the workspace and out of
its `.claude` folder; web fetches reach public addresses only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk.types import (
    PermissionResultAllow,
    PermissionResultDeny,
    ToolPermissionContext,
)

from app.schemas.tenants import TenantSettings
from app.services.execute.policy import ToolPolicy
from app.services.execute.tools import DEFAULT_TOOLS, agent_tools

CONTEXT = ToolPermissionContext()
ALL_TOOLS = frozenset({*DEFAULT_TOOLS, "Bash", "WebFetch", "mcp__crm__read"})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "link").symlink_to("/etc")
    return workspace.resolve()


def _allowed(workspace: Path) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("Write", {"file_path": str(workspace / "a.md"), "content": "x"}),
        ("Read", {"file_path": "notes/a.md"}),
        ("Glob", {"pattern": "**/*.py"}),
        ("Glob", {"pattern": f"{workspace}/**/*.md"}),
        ("Grep", {"pattern": "/etc/passwd", "path": str(workspace)}),
        ("Bash", {"command": "ls"}),
        ("Agent", {"prompt": "x", "description": "y"}),
        ("WebFetch", {"url": "https://93.184.215.14/", "prompt": "x"}),
        # An MCP tool's `path` names something of its server, not a file here.
        ("mcp__crm__read", {"path": "/customers/1"}),
    ]


def _denied(workspace: Path) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("Write", {"file_path": "/etc/passwd", "content": "x"}),
        ("Read", {"file_path": "../other/secret"}),
        ("Read", {"file_path": str(workspace / "link" / "passwd")}),
        ("Read", {"file_path": ["a"]}),
        ("Edit", {"file_path": "a\x00b"}),
        ("Write", {"file_path": ".claude/scheduled_tasks.json", "content": "[]"}),
        ("Write", {"file_path": str(workspace / ".claude" / "settings.json"), "content": "{}"}),
        ("Glob", {"pattern": "/etc/*"}),
        ("Glob", {"pattern": "../../*"}),
        ("Grep", {"pattern": "x", "path": "/"}),
        ("Bash", {"command": "ls", "dangerouslyDisableSandbox": True}),
        ("Bash", {"command": "sleep 60; touch late", "run_in_background": True}),
        ("SendMessage", {"to": "uds:/tmp/cc-socks/1.sock", "message": "hi"}),
        ("EnterWorktree", {}),
        ("mcp__other__read", {"path": "x"}),
        ("CronCreate", {"cron": "* * * * *", "prompt": "x", "durable": True}),
        ("Monitor", {"command": "id"}),
        ("WebFetch", {"url": "http://127.0.0.1:8000/api/tenants", "prompt": "x"}),
        ("WebFetch", {"url": "http://169.254.169.254/latest/meta-data/", "prompt": "x"}),
        ("WebFetch", {"url": "http://[::ffff:127.0.0.1]/", "prompt": "x"}),
        ("WebFetch", {"url": "http://2130706433/", "prompt": "x"}),
        ("WebFetch", {"url": "http://10.0.0.1/", "prompt": "x"}),
        ("WebFetch", {"url": "http://192.0.0.192/", "prompt": "x"}),
        ("WebFetch", {"url": "http://[fec0::1]/", "prompt": "x"}),
        ("WebFetch", {"url": "http://[2002:7f00:1::]/", "prompt": "x"}),
        ("WebFetch", {"url": "http://[64:ff9b::a9fe:a9fe]/", "prompt": "x"}),
        ("WebFetch", {"url": "http://localhost/", "prompt": "x"}),
        ("WebFetch", {"url": "file:///etc/passwd", "prompt": "x"}),
        ("WebFetch", {"url": "http://x:99999/", "prompt": "x"}),
    ]


async def test_calls_outside_the_policy_are_refused(workspace: Path) -> None:
    policy = ToolPolicy(workspace, ALL_TOOLS)
    for name, tool_input in _allowed(workspace):
        assert await policy.refusal(name, tool_input) is None, (name, tool_input)
        result = await policy.can_use_tool(name, tool_input, CONTEXT)
        assert isinstance(result, PermissionResultAllow)
    for name, tool_input in _denied(workspace):
        assert await policy.refusal(name, tool_input), (name, tool_input)
        result = await policy.can_use_tool(name, tool_input, CONTEXT)
        assert isinstance(result, PermissionResultDeny)


async def test_the_hook_denies_with_a_reason(workspace: Path) -> None:
    policy = ToolPolicy(workspace, frozenset(DEFAULT_TOOLS))
    hook_input: Any = {
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "id"},
    }
    denied = await policy.pre_tool_use(hook_input, "toolu_1", {"signal": None})
    assert denied["hookSpecificOutput"]["permissionDecision"] == "deny"  # type: ignore[typeddict-item]
    hook_input = {**hook_input, "tool_name": "Read", "tool_input": {"file_path": "a.md"}}
    assert await policy.pre_tool_use(hook_input, "toolu_2", {"signal": None}) == {}


@pytest.mark.parametrize(
    ("settings", "tools"),
    [
        ({}, DEFAULT_TOOLS),
        ({"bash_enabled": True}, (*DEFAULT_TOOLS, "Bash")),
        (
            {"bash_enabled": True, "web_fetch_enabled": True, "web_search_enabled": True},
            (*DEFAULT_TOOLS, "Bash", "WebFetch", "WebSearch"),
        ),
        ({"tools": ["Read", "Bash"]}, ("Read",)),
        ({"tools": ["Read", "Bash"], "bash_enabled": True}, ("Read", "Bash")),
        ({"tools": []}, ()),
    ],
)
def test_the_tool_set_is_closed(settings: dict[str, Any], tools: tuple[str, ...]) -> None:
    assert agent_tools(TenantSettings.model_validate(settings)) == tools
