"""The tenant's active skills: its plugin folder, and exactly those skills allowed (none
of the CLI's own, none of another tenant's)."""

from __future__ import annotations

import json

from app.services.execute.skillset import qualified
from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    skillset = build.spec.skillset(build.runtime.data_dir)
    if skillset is not None:
        build.options["plugins"] = [{"type": "local", "path": str(skillset)}]
    build.options["skills"] = [qualified(name) for name, _, _ in build.spec.skills]
    # A skill's inline `!`command`` would run as it loads, with Bash, outside any turn of
    # the agent's own: off. (The SDK merges the sandbox settings into these.)
    build.options["settings"] = json.dumps({"disableSkillShellExecution": True})
