"""The tenant's system prompt, in a file of the process's own: never on the command line,
where every process on the host could read it."""

from __future__ import annotations

from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    build.process.prompt.write_text(_with_servers(build.spec.system_prompt or "", build))
    build.options["system_prompt"] = {"type": "file", "path": str(build.process.prompt)}
    # Not snapshotted: a resumed session gets the tenant's prompt as it is now, not the
    # one its first turn recorded (the SDK sends `snapshot` only for the other forms).
    build.options.setdefault("extra_args", {})["system-prompt-snapshot"] = "off"


def _with_servers(prompt: str, build: AgentBuild) -> str:
    """The tenant's prompt, and what it says of its MCP servers."""
    notes = [f"- mcp__{name}__*: {text}" for name, text in build.spec.mcp_notes if text]
    if not notes:
        return prompt
    return f"{prompt}\n\n# Tool servers\n" + "\n".join(notes)
