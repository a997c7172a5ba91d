"""The tool set a run's agent is given: an explicit allow-list, never the CLI's default set
(which grows with each CLI version and holds tools for a person at a terminal: messages to
other agents, worktrees, cron, wake-ups, monitors, plan mode)."""

from __future__ import annotations

from app.schemas.tenants import TenantSettings

DEFAULT_TOOLS = ("Read", "Write", "Edit", "Glob", "Grep", "Skill", "Agent")
# Offered only where the tenant switched them on.
SWITCHED_TOOLS = {
    "Bash": "bash_enabled",
    "WebFetch": "web_fetch_enabled",
    "WebSearch": "web_search_enabled",
}


def agent_tools(settings: TenantSettings) -> tuple[str, ...]:
    """The built-in tools for a tenant's runs: the defaults and its switched-on tools,
    narrowed by its `tools` setting when it has one."""
    offered = [*DEFAULT_TOOLS]
    offered += [name for name, switch in SWITCHED_TOOLS.items() if getattr(settings, switch)]
    if settings.tools is not None:
        chosen = set(settings.tools)
        offered = [name for name in offered if name in chosen]
    return tuple(offered)
