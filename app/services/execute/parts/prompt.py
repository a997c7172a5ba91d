"""The tenant's system prompt, in a file of the process's own: never on the command line,
where every process on the host could read it."""

from __future__ import annotations

from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    build.process.prompt.write_text(build.spec.system_prompt or "")
    build.options["system_prompt"] = {"type": "file", "path": str(build.process.prompt)}
    # Not snapshotted: a resumed session gets the tenant's prompt as it is now, not the
    # one its first turn recorded (the SDK sends `snapshot` only for the other forms).
    build.options.setdefault("extra_args", {})["system-prompt-snapshot"] = "off"
