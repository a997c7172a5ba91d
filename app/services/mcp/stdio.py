"""`stdio` servers: only commands an operator allowed (a command and the arguments it
starts with, no shell), each process in a jail of its own: no network, no view of the
service's files, other tenants or any workspace; only the system directories and what the
operator's entry names, read-only. Stopped with the agent process that uses it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp.client.stdio import StdioServerParameters

from app.config import StdioCommand
from app.errors import UnprocessableError
from app.services.execute.limits import GROUP_NICE

JAIL_HOME = "/tmp"  # noqa: S108 (the jail's own tmpfs)


def allowed_command(config: dict[str, Any], commands: Sequence[StdioCommand]) -> StdioCommand:
    """The operator's entry that allows this command and its arguments; else a 422."""
    args = list(config.get("args", []))
    for entry in commands:
        prefix = list(entry.args_prefix)
        if config.get("command") == entry.command and args[: len(prefix)] == prefix:
            return entry
    raise UnprocessableError(
        "That command is not on the operator's list of STDIO servers (MCP_STDIO_COMMANDS)",
        code="COMMAND_NOT_ALLOWED",
    )


@dataclass(frozen=True)
class StdioJail:
    """How this node starts STDIO servers: its bwrap, the arguments every jail shares,
    and the operator's list."""

    bwrap: Path
    common: tuple[str, ...]
    commands: tuple[StdioCommand, ...]
    # How much nicer than the service servers run (AGENT_NICE), their jail's group too.
    nice: int = 0

    def parameters(self, config: dict[str, Any]) -> StdioServerParameters:
        entry = allowed_command(config, self.commands)
        binds = [a for path in entry.read_only for a in ("--ro-bind", str(path), str(path))]
        jail = [*self.common, *binds, "--chdir", JAIL_HOME, "--setenv", "HOME", JAIL_HOME]
        # The server's environment (credentials included) goes in the process's
        # environment, never on a command line another process could read.
        command = [str(self.bwrap), *jail, "--", "/bin/sh", "-c", GROUP_NICE + 'exec "$@"']
        command += ["sh", str(self.nice), entry.command, *config.get("args", [])]
        if self.nice:
            command = ["nice", "-n", str(self.nice), *command]
        return StdioServerParameters(
            command=command[0],
            args=command[1:],
            env={str(k): str(v) for k, v in config.get("env", {}).items()},
        )
