"""A run's spec: everything about a run that shapes its agent process, loaded once into
one value. `parts/` turns it into the SDK's options, one concern a module; a warm agent
process serves a later run only if that run's spec has the same fingerprint."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import claude_agent_sdk

from app.services.execute.jail import AgentProcess, Jail
from app.services.execute.providers import Provider
from app.services.execute.session_store import PostgresSessionStore
from app.services.execute.skillset import skillset_dir
from app.services.mcp.proxy import ServerPlan
from app.services.mcp.stdio import StdioJail


def bundled_cli() -> Path:
    return Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"


def tenant_workspaces(data_dir: Path, tenant_id: str) -> Path:
    return data_dir.resolve() / "workspaces" / tenant_id


def workspace_dir(data_dir: Path, tenant_id: str, conversation_id: str) -> Path:
    return tenant_workspaces(data_dir, tenant_id) / conversation_id


@dataclass(frozen=True)
class RunSpec:
    """What a run's agent process is made from (never secrets: it is fingerprinted)."""

    tenant_id: str
    conversation_id: str
    system_prompt: str | None
    model: str
    # What the CLI's aliases name: (alias, the provider's model name).
    model_aliases: tuple[tuple[str, str], ...]
    max_turns: int
    tools: tuple[str, ...]
    # The SDK session to resume: what the process continues, not what it is.
    resume: str | None
    # The tenant's active skills: (name, version, digest), by name.
    skills: tuple[tuple[str, int, str], ...] = ()
    # The run's MCP servers as configured (placeholders, never values): (name, digest),
    # and what the agent is told of each: (name, description).
    mcp_servers: tuple[tuple[str, str], ...] = ()
    mcp_notes: tuple[tuple[str, str], ...] = ()
    # The service's own servers the tenant added: (server name, built-in name).
    builtin_servers: tuple[tuple[str, str], ...] = ()

    def skillset(self, data_dir: Path) -> Path | None:
        """The plugin folder of the run's skills (made before the process starts)."""
        return skillset_dir(data_dir, self.tenant_id, self.skills) if self.skills else None

    def fingerprint(self) -> str:
        """The shape of the process this spec makes: all of it but `resume`."""
        shape = {k: v for k, v in asdict(self).items() if k != "resume"}
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RunInputs:
    """What a run brings besides its spec, in memory only (never stored, never in the
    fingerprint): its MCP servers' configs with their credentials substituted."""

    mcp: tuple[ServerPlan, ...] = ()
    # The most this run may cost: its own cap, or what is left of a budget (None: no cap).
    cost_cap: Decimal | None = None

    def credentials(self) -> str:
        """A keyed digest of the credentials: a warm process made with others is not
        reused (the key lives in this process only, so the digest reveals nothing)."""
        data = json.dumps([[p.name, p.config] for p in self.mcp], sort_keys=True).encode()
        return hmac.new(_CREDENTIALS_KEY, data, hashlib.sha256).hexdigest()


_CREDENTIALS_KEY = secrets.token_bytes(32)


@dataclass(frozen=True)
class AgentRuntime:
    """What every agent process is started with, found once at start."""

    data_dir: Path
    provider: Provider
    launcher: Path
    session_store: PostgresSessionStore
    max_retries: int
    # How much nicer than the service agent processes run (0: as nice as it).
    nice: int
    # ...and once they have answered (see Settings.agent_answering_nice).
    answering_nice: int
    # Private to the service: each process's prompt file, jail arguments, egress socket.
    runtime_dir: Path
    # None: agents run unjailed (AGENT_SANDBOX=off, said loudly at start).
    jail: Jail | None = None
    bwrap: Path | None = None
    # Hosts an operator lets web fetches reach although they are not public.
    allow_hosts: tuple[str, ...] = ()
    # How STDIO MCP servers start here (None: they do not, without the jail).
    stdio: StdioJail | None = None
    # Why runs are refused here (no jail could be made, and the operator did not turn the
    # jail off), or None.
    refusal: str | None = None


@dataclass
class AgentBuild:
    """One agent process being put together: the parts fill in its environment and the
    keyword arguments of its `ClaudeAgentOptions`."""

    spec: RunSpec
    runtime: AgentRuntime
    process: AgentProcess
    workspace: Path
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def jailed(self) -> bool:
        return self.process.args_file is not None
