"""The permission policy (`can_use_tool`): file tools stay inside the conversation's
workspace, and Bash runs only where the tenant enabled it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from claude_agent_sdk.types import (
    PermissionResultAllow,
    PermissionResultDeny,
    ToolPermissionContext,
)

# Tool input keys that name a path on disk.
_PATH_KEYS = ("file_path", "path", "notebook_path")
_SHELL_TOOLS = frozenset({"Bash", "BashOutput", "KillShell", "KillBash", "Monitor"})

CanUseTool = Callable[
    [str, dict[str, Any], ToolPermissionContext],
    Awaitable[PermissionResultAllow | PermissionResultDeny],
]


def inside(workspace: Path, candidate: str) -> bool:
    """Whether `candidate` (absolute, or relative to the workspace) resolves inside it;
    symlinks are followed, so a link cannot lead out."""
    if "\x00" in candidate:
        return False
    path = Path(candidate)
    resolved = (path if path.is_absolute() else workspace / path).resolve()
    return resolved == workspace or workspace in resolved.parents


def make_policy(workspace: Path, *, bash_enabled: bool) -> CanUseTool:
    root = workspace.resolve()

    async def can_use_tool(
        tool_name: str, tool_input: dict[str, Any], _: ToolPermissionContext
    ) -> PermissionResultAllow | PermissionResultDeny:
        if tool_name in _SHELL_TOOLS and not bash_enabled:
            return PermissionResultDeny(message="Shell commands are disabled for this tenant.")
        pattern = tool_input.get("pattern")
        absolute_glob = tool_name == "Glob" and isinstance(pattern, str) and pattern.startswith("/")
        if absolute_glob and not inside(root, str(pattern).split("*", 1)[0] or "/"):
            return PermissionResultDeny(
                message="Glob may only search inside the conversation workspace."
            )
        for key in _PATH_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value and not inside(root, value):
                return PermissionResultDeny(
                    message=f"{tool_name} may only touch files inside the conversation workspace."
                )
        return PermissionResultAllow()

    return can_use_tool
