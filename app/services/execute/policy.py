"""The permission policy, held on every tool call: only the run's tools and skills, file
paths inside the conversation's workspace (never its `.claude` folder) or, for reading
only, inside the run's skills folder, web fetches to public addresses only.

It is enforced in a `PreToolUse` hook, which the CLI calls for every tool call, the ones it
would allow on its own (reads, "read-only" shell commands) and the sub-agents' included;
`can_use_tool`, asked only when the CLI would prompt, applies the same rules again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from claude_agent_sdk import HookMatcher
from claude_agent_sdk.types import (
    HookContext,
    HookEvent,
    HookInput,
    HookJSONOutput,
    PermissionResultAllow,
    PermissionResultDeny,
    ToolPermissionContext,
)

from app.utils.addresses import BlockedAddressError, resolve_public

# Tool input keys that name a path on disk.
_PATH_KEYS = ("file_path", "path", "notebook_path")
# What the CLI keeps there (scheduled tasks, local settings) is not the agent's to write.
_CLI_FOLDER = ".claude"
MAX_URL_CHARS = 2048
# The tools that only read: they may also look inside the run's read-only folders.
READ_TOOLS = frozenset({"Read", "Glob", "Grep"})


def _resolved(workspace: Path, candidate: str) -> Path | None:
    """Where `candidate` (absolute, or relative to the workspace) leads; symlinks are
    followed, so a link cannot lead out."""
    if "\x00" in candidate:
        return None
    path = Path(candidate)
    return (path if path.is_absolute() else workspace / path).resolve()


def resolved_inside(workspace: Path, candidate: str) -> Path | None:
    """Where `candidate` leads, if that is inside the workspace."""
    resolved = _resolved(workspace, candidate)
    return resolved if resolved is not None and _within(resolved, workspace) else None


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class ToolPolicy:
    workspace: Path
    tools: frozenset[str]
    # Hosts an operator lets web fetches reach although they are not public.
    allow_hosts: tuple[str, ...] = ()
    # Folders the reading tools may look into (the run's skills), never write.
    read_only: tuple[Path, ...] = ()
    # The skills the Skill tool may load (bare and plugin-qualified names).
    skills: frozenset[str] = frozenset()

    def _readable(self, tool_name: str, candidate: str) -> bool:
        """A reading tool's path inside one of the read-only folders."""
        if tool_name not in READ_TOOLS:
            return False
        resolved = _resolved(self.workspace, candidate)
        return resolved is not None and any(_within(resolved, ro) for ro in self.read_only)

    async def refusal(self, tool_name: str, tool_input: dict[str, Any]) -> str | None:
        """Why this call may not run, or None if it may."""
        if tool_name not in self.tools:
            return f"The tool {tool_name} is not available here."
        if tool_name.startswith("mcp__"):
            # Served by the service (its own tools, or proxies of a tenant's servers):
            # a `path` there is the server's business, not a file of this host.
            return None
        root = self.workspace
        for key in _PATH_KEYS:
            value = tool_input.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                return f"{tool_name} may only touch files inside the conversation workspace."
            resolved = resolved_inside(root, value)
            if resolved is None and self._readable(tool_name, value):
                continue
            if resolved is None:
                return f"{tool_name} may only touch files inside the conversation workspace."
            if _within(resolved, root / _CLI_FOLDER):
                return f"{tool_name} may not touch the workspace's {_CLI_FOLDER} folder."
        pattern = tool_input.get("pattern")
        if tool_name == "Glob" and isinstance(pattern, str):
            base = pattern.split("*", 1)[0]
            outside = resolved_inside(root, base) is None and not self._readable(tool_name, base)
            if pattern.startswith(("/", "~")) and outside:
                return "Glob may only search inside the conversation workspace."
            if ".." in Path(pattern).parts:
                return "Glob may only search inside the conversation workspace."
        if tool_name == "Bash" and tool_input.get("dangerouslyDisableSandbox"):
            return "Shell commands always run in the sandbox."
        if tool_name == "Bash" and tool_input.get("run_in_background"):
            # It would go on after the run ends (the CLI says it is idle meanwhile).
            return "Shell commands run in the foreground, within the run."
        if tool_name == "Skill":
            skill = tool_input.get("skill")
            if not isinstance(skill, str) or skill.strip() not in self.skills:
                return "That skill is not available here."
        if tool_name == "WebFetch":
            return await self._url_refusal(tool_input.get("url"))
        return None

    async def _url_refusal(self, url: Any) -> str | None:
        if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
            return "WebFetch needs a URL."
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return "WebFetch needs a valid URL."
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "WebFetch only fetches http and https URLs."
        try:
            await resolve_public(parts.hostname, port, allow_hosts=self.allow_hosts)
        except BlockedAddressError:
            return "WebFetch may only reach public internet addresses."
        return None

    async def can_use_tool(
        self, tool_name: str, tool_input: dict[str, Any], _: ToolPermissionContext
    ) -> PermissionResultAllow | PermissionResultDeny:
        reason = await self.refusal(tool_name, tool_input)
        if reason is not None:
            return PermissionResultDeny(message=reason)
        return PermissionResultAllow()

    async def pre_tool_use(
        self, hook_input: HookInput, _tool_use_id: str | None, _context: HookContext
    ) -> HookJSONOutput:
        data: dict[str, Any] = dict(hook_input)
        tool_input = data.get("tool_input")
        reason = await self.refusal(
            str(data.get("tool_name", "")), tool_input if isinstance(tool_input, dict) else {}
        )
        if reason is None:
            return {}  # no opinion: the CLI's own checks and can_use_tool come next
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }

    def hooks(self) -> dict[HookEvent, list[HookMatcher]]:
        # "block": a hook that fails (raises, times out) stops the call rather than
        # letting it through unchecked.
        return {
            "PreToolUse": [HookMatcher(matcher=None, hooks=[self.pre_tool_use], on_failure="block")]
        }
