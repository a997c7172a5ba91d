"""The permission policy: file tools stay in the workspace; Bash only where enabled."""

from __future__ import annotations

from pathlib import Path

from claude_agent_sdk.types import (
    PermissionResultAllow,
    PermissionResultDeny,
    ToolPermissionContext,
)

from app.services.execute.policy import make_policy

CONTEXT = ToolPermissionContext()


async def test_paths_must_stay_in_the_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "link").symlink_to("/etc")
    policy = make_policy(workspace, bash_enabled=False)
    allowed = [
        ("Write", {"file_path": str(workspace / "a.md"), "content": "x"}),
        ("Read", {"file_path": "notes/a.md"}),
        ("Glob", {"pattern": "**/*.py"}),
        ("Glob", {"pattern": f"{workspace}/**/*.md"}),
        ("Grep", {"pattern": "/etc/passwd", "path": str(workspace)}),
    ]
    denied = [
        ("Write", {"file_path": "/etc/passwd", "content": "x"}),
        ("Read", {"file_path": "../other/secret"}),
        ("Read", {"file_path": str(workspace / "link" / "passwd")}),
        ("Edit", {"file_path": "a\x00b"}),
        ("Glob", {"pattern": "/etc/*"}),
        ("Grep", {"pattern": "x", "path": "/"}),
        ("Bash", {"command": "ls"}),
    ]
    for name, tool_input in allowed:
        assert isinstance(await policy(name, tool_input, CONTEXT), PermissionResultAllow), (
            name,
            tool_input,
        )
    for name, tool_input in denied:
        assert isinstance(await policy(name, tool_input, CONTEXT), PermissionResultDeny), (
            name,
            tool_input,
        )
    with_bash = make_policy(workspace, bash_enabled=True)
    assert isinstance(await with_bash("Bash", {"command": "ls"}, CONTEXT), PermissionResultAllow)
