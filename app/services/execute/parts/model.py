"""The model (the provider's name for the catalog model) and the tenant's turn limit."""

from __future__ import annotations

from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    build.options["model"] = build.spec.model
    build.options["max_turns"] = build.spec.max_turns
