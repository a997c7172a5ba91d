"""Build the SDK's options for a run's agent process: prompt (in a file, not on argv), model,
workspace, the closed tool set and its policy, resume, session store, the jail, and a
scrubbed environment for the CLI (through the launcher, since the SDK always passes the
service's whole environment on)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import claude_agent_sdk
from claude_agent_sdk import ClaudeAgentOptions
from claude_agent_sdk.types import SandboxSettings, SessionStore

from app.services.execute.egress import Endpoint
from app.services.execute.jail import JAIL_PORT, AgentProcess, Jail
from app.services.execute.policy import ToolPolicy
from app.services.execute.providers import Provider
from app.services.execute.session_store import PostgresSessionStore

# Variables the CLI may keep besides those the service sets: locale, time zone, the
# working directory, and those the SDK itself sets for its CLI.
_BASE_VARIABLES = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "PWD",
    "TRACEPARENT",
    "TRACESTATE",
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_AGENT_SDK_VERSION",
    "CLAUDE_AGENT_SDK_CLIENT_APP",
    "CLAUDE_AGENT_SDK_DERIVED_CLIENT_APP",
    "CLAUDE_CODE_SDK_READS_SESSION_STATE",
    "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING",
)


def bundled_cli() -> Path:
    return Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"


@dataclass(frozen=True)
class RunSetup:
    """Everything about a run that shapes the CLI process."""

    tenant_id: str
    conversation_id: str
    system_prompt: str | None
    model: str
    max_turns: int
    tools: tuple[str, ...]
    resume: str | None


@dataclass(frozen=True)
class AgentRuntime:
    """What every agent process is started with, found once at start."""

    data_dir: Path
    provider: Provider
    launcher: Path
    session_store: PostgresSessionStore
    max_retries: int
    # Private to the service: each process's prompt file, jail arguments, egress socket.
    runtime_dir: Path
    # None: agents run unjailed (AGENT_SANDBOX=off, said loudly at start).
    jail: Jail | None = None
    bwrap: Path | None = None
    # Hosts an operator lets web fetches reach although they are not public.
    allow_hosts: tuple[str, ...] = ()
    # Why runs are refused here (no jail could be made, and the operator did not turn the
    # jail off), or None.
    refusal: str | None = None


def workspace_dir(data_dir: Path, tenant_id: str, conversation_id: str) -> Path:
    return data_dir.resolve() / "workspaces" / tenant_id / conversation_id


def _sandbox(jailed: bool) -> SandboxSettings:
    """The CLI's own sandbox for Bash, which must hold or refuse: without
    `failIfUnavailable` it runs commands unsandboxed when bwrap or socat is missing.
    Inside our jail it nests, which needs its weaker mode (no new /proc)."""
    settings: dict[str, Any] = {
        "enabled": True,
        "failIfUnavailable": True,
        "allowUnsandboxedCommands": False,
        "enableWeakerNestedSandbox": jailed,
    }
    return cast(SandboxSettings, settings)


async def open_agent(
    runtime: AgentRuntime, setup: RunSetup
) -> tuple[ClaudeAgentOptions, AgentProcess]:
    """The options for a new agent process of this run, and the files and bridge it uses
    (close them when the process ends)."""
    workspace = workspace_dir(runtime.data_dir, setup.tenant_id, setup.conversation_id)
    workspace.mkdir(parents=True, exist_ok=True)
    web_access = "WebFetch" in setup.tools
    provider = runtime.provider
    network, credentials = _jailed_network(provider, web_access=web_access)
    if runtime.jail is not None:
        process = await runtime.jail.open(
            workspace,
            Endpoint.from_url(provider.url),
            web_access=web_access,
            credentials=credentials,
        )
    else:
        process = AgentProcess(Path(tempfile.mkdtemp(dir=runtime.runtime_dir)))
    try:
        process.prompt.write_text(setup.system_prompt or "")
        # Its own home and config directory, made for this process and deleted with it:
        # nothing an agent leaves there (a link, say, which the SDK would follow on the
        # host when it next resumes the session) outlives the process. Transcripts live
        # in the session store.
        config_dir = process.home
        config_dir.mkdir(mode=0o700)
        env = {
            **provider.env,
            "HOME": str(config_dir),
            "CLAUDE_CONFIG_DIR": str(config_dir),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(runtime.max_retries),
            # session_state_changed in the stream: "idle" is how a run knows the CLI owes
            # it nothing more (no background task, no notification turn).
            "CLAUDE_CODE_EMIT_SESSION_STATE_EVENTS": "1",
            "DISABLE_AUTOUPDATER": "1",
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),  # noqa: S108 (the CLI needs one)
        }
        if process.args_file is not None:
            env.update(network)
        elif "Bash" in setup.tools:
            # Unjailed, the CLI holds the provider's credentials: Bash must not see them.
            # (Jailed, it holds none for the Anthropic wire; and this scrubbing would make
            # its Bash sandbox mount a /proc, which the jail does not allow.) Both need
            # bwrap on PATH, and refuse to run without it.
            env["CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"] = "1"
            if runtime.bwrap is not None:
                env["PATH"] = f"{runtime.bwrap.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        allowed = sorted({*env, *_BASE_VARIABLES})
        env["CMAB_AGENT_CLI"] = str(bundled_cli())
        env["CMAB_AGENT_ENV"] = " ".join(allowed)
        if runtime.jail is not None and process.args_file is not None:
            env["CMAB_BWRAP"] = str(runtime.jail.bwrap)
            env["CMAB_JAIL_ARGS"] = str(process.args_file)
        policy = ToolPolicy(workspace.resolve(), frozenset(setup.tools), runtime.allow_hosts)
        options = ClaudeAgentOptions(
            system_prompt={"type": "file", "path": str(process.prompt)},
            # Not snapshotted: a resumed session gets the tenant's prompt as it is now,
            # not the one its first turn recorded.
            extra_args={"system-prompt-snapshot": "off"},
            tools=list(setup.tools),
            model=setup.model,
            cwd=str(workspace),
            cli_path=str(runtime.launcher),
            env=env,
            hooks=policy.hooks(),
            can_use_tool=policy.can_use_tool,
            include_partial_messages=True,
            resume=setup.resume,
            session_store=cast(SessionStore, runtime.session_store),
            max_turns=setup.max_turns,
            setting_sources=[],
            # User input is the user's words: no @path expansion, no CLI slash commands.
            verbatim_prompts=True,
            sandbox=_sandbox(runtime.jail is not None) if "Bash" in setup.tools else None,
        )
    except BaseException:
        await process.close()
        raise
    return options, process


def _jailed_network(
    provider: Provider, *, web_access: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """How the jailed CLI reaches its model through the loopback port bridged to the
    service: the variables it gets, and the headers the bridge adds to its model requests.

    An Anthropic-wire or plain-http endpoint is called at the bridge itself, which sends the
    request on with the provider's key (the CLI holds a placeholder). Bedrock over https
    signs its own requests, so the bridge is its https proxy, tunnelling only to the model
    (its AWS credentials stay in the CLI, scrubbed from what Bash sees). With web access,
    the bridge is everyone's proxy: tunnels then reach public addresses too."""
    bridge = f"http://127.0.0.1:{JAIL_PORT}"
    env: dict[str, str] = {}
    credentials: dict[str, str] = {}
    if provider.wire == "anthropic" or Endpoint.from_url(provider.url).scheme == "http":
        env[provider.url_variable] = bridge + urlsplit(provider.url).path.rstrip("/")
        if "ANTHROPIC_API_KEY" in provider.env:
            credentials["x-api-key"] = provider.env["ANTHROPIC_API_KEY"]
            env["ANTHROPIC_API_KEY"] = "held-by-the-service"
    else:
        env["HTTPS_PROXY"] = env["https_proxy"] = bridge
    if web_access:
        env["HTTPS_PROXY"] = env["https_proxy"] = bridge
        env["HTTP_PROXY"] = env["http_proxy"] = bridge
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env, credentials
