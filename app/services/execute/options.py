"""Build the SDK's options for a run: prompt, model, workspace, policy, resume, session
store, and a scrubbed environment for the CLI (through a launcher script, since the SDK
always passes the service's whole environment on)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import claude_agent_sdk
from claude_agent_sdk import ClaudeAgentOptions
from claude_agent_sdk.types import SessionStore

from app.services.execute.policy import make_policy
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
_LAUNCHER = """#!/bin/sh
# Starts the bundled Claude Code CLI with only the variables named in CMAB_AGENT_ENV:
# no database URL, keys or secrets of the service, nor the host's Claude credentials.
cli="$CMAB_AGENT_CLI"
allowed=" $CMAB_AGENT_ENV "
for name in $(env | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p'); do
  case "$allowed" in
    *" $name "*) ;;
    *) unset "$name" ;;
  esac
done
# If the service dies without ending it (killed, say), the CLI gets SIGTERM rather than
# finishing its turn for nobody: setpriv (util-linux 2.33+) sets the parent-death signal.
if setpriv --pdeathsig TERM true >/dev/null 2>&1; then
  exec setpriv --pdeathsig TERM "$cli" "$@"
fi
exec "$cli" "$@"
"""


def bundled_cli() -> Path:
    return Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"


def install_launcher(data_dir: Path) -> Path:
    path = data_dir.resolve() / "bin" / "agent-cli"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != _LAUNCHER:
        path.write_text(_LAUNCHER)
        path.chmod(0o755)
    return path


@dataclass(frozen=True)
class RunSetup:
    """Everything about a run that shapes the CLI process."""

    tenant_id: str
    conversation_id: str
    system_prompt: str | None
    model: str
    max_turns: int
    bash_enabled: bool
    resume: str | None


def workspace_dir(data_dir: Path, tenant_id: str, conversation_id: str) -> Path:
    return data_dir.resolve() / "workspaces" / tenant_id / conversation_id


def build_options(
    setup: RunSetup,
    *,
    data_dir: Path,
    provider: Provider,
    launcher: Path,
    session_store: PostgresSessionStore,
    max_retries: int,
) -> ClaudeAgentOptions:
    workspace = workspace_dir(data_dir, setup.tenant_id, setup.conversation_id)
    workspace.mkdir(parents=True, exist_ok=True)
    # Per tenant: nothing one tenant's agent keeps there can reach another's.
    config_dir = data_dir.resolve() / "agent-config" / setup.tenant_id
    config_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **provider.env,
        "HOME": str(config_dir),
        "CLAUDE_CONFIG_DIR": str(config_dir),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
        # session_state_changed in the stream: "idle" is how a run knows the CLI owes it
        # nothing more (no background task, no notification turn).
        "CLAUDE_CODE_EMIT_SESSION_STATE_EVENTS": "1",
        "DISABLE_AUTOUPDATER": "1",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),  # noqa: S108 (the CLI needs a temp dir)
    }
    allowed = sorted({*env, *_BASE_VARIABLES})
    env["CMAB_AGENT_CLI"] = str(bundled_cli())
    env["CMAB_AGENT_ENV"] = " ".join(allowed)
    return ClaudeAgentOptions(
        # Not snapshotted: a resumed session gets the tenant's prompt as it is now, not
        # the one its first turn recorded.
        system_prompt={"type": "custom", "prompt": setup.system_prompt or "", "snapshot": False},
        model=setup.model,
        cwd=str(workspace),
        cli_path=str(launcher),
        env=env,
        can_use_tool=make_policy(workspace, bash_enabled=setup.bash_enabled),
        include_partial_messages=True,
        resume=setup.resume,
        session_store=cast(SessionStore, session_store),
        max_turns=setup.max_turns,
        setting_sources=[],
    )
