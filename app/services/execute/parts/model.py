"""The model (the provider's name for the catalog model), what the CLI's aliases name,
and the tenant's turn limit."""

from __future__ import annotations

from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    build.options["model"] = build.spec.model
    build.options["max_turns"] = build.spec.max_turns
    for alias, name in build.spec.model_aliases:
        build.env[f"ANTHROPIC_DEFAULT_{alias.upper()}_MODEL"] = name
