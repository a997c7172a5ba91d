"""The tenant's MCP servers: each remote one the service connected to, served to the CLI
as an in-process proxy of its allowed tools (the CLI holds no credential and opens no
connection), and the service's own servers it added (`web`); their descriptions go to
the system prompt (see the prompt part)."""

from __future__ import annotations

from app.services.execute.spec import AgentBuild
from app.services.mcp.proxy import proxy_server
from app.services.mcp.servers import BUILTINS
from app.services.mcp.web import WebFetcher


def apply(build: AgentBuild) -> None:
    servers = build.options.setdefault("mcp_servers", {})
    for upstream in build.process.upstreams:
        assert upstream.client is not None
        servers[upstream.plan.name] = proxy_server(upstream.plan, upstream.client, upstream.tools)
    for name, builtin in build.spec.builtin_servers:
        if builtin == "web":
            servers[name] = WebFetcher(build.runtime.allow_hosts).server(name)


def tool_names(build: AgentBuild) -> list[str]:
    remote = [
        f"mcp__{upstream.plan.name}__{tool.name}"
        for upstream in build.process.upstreams
        for tool in upstream.tools
    ]
    builtin = [
        f"mcp__{name}__{tool}"
        for name, builtin in build.spec.builtin_servers
        if builtin != "workspace"  # always there, under its own name
        for tool in BUILTINS[builtin][1]
    ]
    return remote + builtin
