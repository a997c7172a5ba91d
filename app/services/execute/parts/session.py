"""The conversation's SDK session: resumed from the PostgreSQL session store, streamed
in parts, no settings from disk, and the user's words delivered as they are."""

from __future__ import annotations

from typing import cast

from claude_agent_sdk.types import SessionStore

from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    build.options["resume"] = build.spec.resume
    build.options["session_store"] = cast(SessionStore, build.runtime.session_store)
    build.options["include_partial_messages"] = True
    build.options["setting_sources"] = []
    # No @path expansion, no CLI slash commands from end users.
    build.options["verbatim_prompts"] = True
