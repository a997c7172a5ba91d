"""The closed tool set and the policy held on every call; Bash also in the CLI's own
sandbox."""

from __future__ import annotations

from typing import Any, cast

from claude_agent_sdk.types import SandboxSettings

from app.services.execute.parts.mcp import tool_names as mcp_tool_names
from app.services.execute.policy import ToolPolicy
from app.services.execute.present import TOOL_NAME
from app.services.execute.skillset import qualified
from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    tools = build.spec.tools
    # The built-in tools served in-process are the agent's too.
    allowed = frozenset({*tools, *BUILTIN_TOOLS, *mcp_tool_names(build)})
    skillset = build.spec.skillset(build.runtime.data_dir)
    policy = ToolPolicy(
        build.workspace.resolve(),
        allowed,
        build.runtime.allow_hosts,
        read_only=(skillset,) if skillset is not None else (),
        # Only `tenant:<name>`: a bare name could mean one of the CLI's own skills.
        skills=frozenset(qualified(skill) for skill, _, _ in build.spec.skills),
    )
    build.options["tools"] = list(tools)
    build.options["hooks"] = policy.hooks()
    build.options["can_use_tool"] = policy.can_use_tool
    if "Bash" in tools:
        build.options["sandbox"] = _sandbox(nested=build.jailed)


BUILTIN_TOOLS = (TOOL_NAME,)


def _sandbox(*, nested: bool) -> SandboxSettings:
    """It must hold or refuse: without `failIfUnavailable` the CLI runs commands
    unsandboxed when bwrap or socat is missing. Inside our jail it nests, which needs its
    weaker mode (no new /proc)."""
    settings: dict[str, Any] = {
        "enabled": True,
        "failIfUnavailable": True,
        "allowUnsandboxedCommands": False,
        "enableWeakerNestedSandbox": nested,
    }
    return cast(SandboxSettings, settings)
