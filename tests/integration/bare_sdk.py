"""The bare SDK against the scripted model server, as benches and checks that compare the
service with it start it: every tool allowed, no settings from disk, a config dir of its
own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from claude_agent_sdk import ClaudeAgentOptions
from claude_agent_sdk.types import PermissionResultAllow, ToolPermissionContext

MODEL = "claude-sonnet-4-5-20250929"


async def _allow(_: str, __: dict[str, Any], ___: ToolPermissionContext) -> PermissionResultAllow:
    return PermissionResultAllow()


def bare_options(model_url: str, workdir: Path, **options: Any) -> ClaudeAgentOptions:
    """Options for a bare `ClaudeSDKClient` in `workdir`; `options` add to them."""
    return ClaudeAgentOptions(
        model=MODEL,
        cwd=str(workdir),
        can_use_tool=_allow,
        setting_sources=[],
        env={
            "ANTHROPIC_BASE_URL": model_url,
            "ANTHROPIC_API_KEY": "offline",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CONFIG_DIR": str(workdir / ".claude"),
        },
        **options,
    )
