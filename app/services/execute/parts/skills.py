"""The tenant's active skills: its plugin folder, and exactly those skills allowed (none
of the CLI's own, none of another tenant's)."""

from __future__ import annotations

from app.services.execute.skillset import qualified
from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    skillset = build.spec.skillset(build.runtime.data_dir)
    if skillset is not None:
        build.options["plugins"] = [{"type": "local", "path": str(skillset)}]
    build.options["skills"] = [qualified(name) for name, _, _ in build.spec.skills]
