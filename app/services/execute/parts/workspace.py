"""The conversation's workspace: the agent's working directory."""

from __future__ import annotations

from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    build.options["cwd"] = str(build.workspace)
