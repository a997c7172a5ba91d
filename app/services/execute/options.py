"""Open a new agent process for a run: its private files (and, jailed, its egress bridge),
then the SDK's options, made from the run's spec by the parts in `parts/`."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from claude_agent_sdk import ClaudeAgentOptions

from app.services.execute.egress import Endpoint
from app.services.execute.jail import AgentProcess
from app.services.execute.parts import PARTS
from app.services.execute.parts.network import jailed_network
from app.services.execute.spec import AgentBuild, AgentRuntime, RunInputs, RunSpec, workspace_dir
from app.services.mcp.proxy import failure_reason
from app.services.mcp.upstream import Upstream


async def open_agent(
    runtime: AgentRuntime, spec: RunSpec, inputs: RunInputs | None = None
) -> tuple[ClaudeAgentOptions, AgentProcess]:
    """The options for a new agent process of this run, and the files, bridge and MCP
    connections it uses (close them when the process ends)."""
    workspace = workspace_dir(runtime.data_dir, spec.tenant_id, spec.conversation_id)
    workspace.mkdir(parents=True, exist_ok=True)
    skillset = spec.skillset(runtime.data_dir)
    if runtime.jail is not None:
        web_access = "WebFetch" in spec.tools
        _, credentials = jailed_network(runtime.provider, web_access=web_access)
        process = await runtime.jail.open(
            workspace,
            Endpoint.from_url(runtime.provider.url),
            web_access=web_access,
            credentials=credentials,
            allow_hosts=runtime.allow_hosts,
            read_only=[skillset] if skillset is not None else [],
        )
    else:
        process = AgentProcess(Path(tempfile.mkdtemp(dir=runtime.runtime_dir)))
    try:
        if inputs is not None and any(p.type != "builtin" for p in inputs.mcp):
            await _connect_mcp(runtime, process, inputs)
        build = AgentBuild(spec, runtime, process, workspace)
        for part in PARTS:
            part(build)
        return ClaudeAgentOptions(**build.options), process
    except BaseException:
        await process.close()
        raise


async def _connect_mcp(runtime: AgentRuntime, process: AgentProcess, inputs: RunInputs) -> None:
    """Connect to every server at once; one that fails is left out (and said), the rest
    serve the run."""
    upstreams = [Upstream(plan) for plan in inputs.mcp if plan.type != "builtin"]
    results = await asyncio.gather(
        *(u.open(runtime.allow_hosts, runtime.stdio) for u in upstreams), return_exceptions=True
    )
    for upstream, result in zip(upstreams, results, strict=True):
        if isinstance(result, BaseException):
            process.mcp_failures.append((upstream.plan.name, failure_reason(result)))
        else:
            process.upstreams.append(upstream)
