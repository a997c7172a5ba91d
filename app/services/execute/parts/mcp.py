"""The tenant's MCP servers: each one the service connected to, served to the CLI as an
in-process proxy of its allowed tools (the CLI holds no credential and opens no
connection); their descriptions go to the system prompt (see the prompt part)."""

from __future__ import annotations

from app.services.execute.spec import AgentBuild
from app.services.mcp.proxy import proxy_server


def apply(build: AgentBuild) -> None:
    servers = build.options.setdefault("mcp_servers", {})
    for upstream in build.process.upstreams:
        assert upstream.client is not None
        servers[upstream.plan.name] = proxy_server(
            upstream.plan, upstream.client, upstream.tools, build.process.mcp_calls
        )


def tool_names(build: AgentBuild) -> list[str]:
    return [
        f"mcp__{upstream.plan.name}__{tool.name}"
        for upstream in build.process.upstreams
        for tool in upstream.tools
    ]
