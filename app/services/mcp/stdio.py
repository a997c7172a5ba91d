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

JAIL_HOME = "/tmp"  # noqa: S108 (the jail's own tmpfs)
# Starts a server `nice`r (`sh -c NICE_GROUP sh N bwrap ...`). The MCP client starts each
# server as a session of its own, and so, where the kernel schedules sessions as groups
# (sched_autogroup), a group that would compete with the whole service as an equal,
# whatever its threads' niceness: that group is made N nicer too. Unprivileged, such
# writes are rate-limited machine-wide (a few a second): retried in the background, so
# the server does not wait; never where the process is not a session's first.
NICE_GROUP = """if [ "$(cut -d' ' -f6 /proc/$$/stat)" = "$$" ] && [ -w /proc/$$/autogroup ]; then
  (for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    echo "$1" 2>/dev/null >/proc/$$/autogroup && break; sleep 0.1; done) &
fi
shift
exec "$@"
"""


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
    # How much nicer than the service servers run (AGENT_NICE).
    nice: int = 0

    def parameters(self, config: dict[str, Any]) -> StdioServerParameters:
        entry = allowed_command(config, self.commands)
        binds = [a for path in entry.read_only for a in ("--ro-bind", str(path), str(path))]
        jail = [*self.common, *binds, "--chdir", JAIL_HOME, "--setenv", "HOME", JAIL_HOME]
        # The server's environment (credentials included) goes in the process's
        # environment, never on a command line another process could read.
        command = [str(self.bwrap), *jail, "--", entry.command, *config.get("args", [])]
        if self.nice:
            command = [
                "nice",
                "-n",
                str(self.nice),
                "sh",
                "-c",
                NICE_GROUP,
                "sh",
                str(self.nice),
                *command,
            ]
        return StdioServerParameters(
            command=command[0],
            args=command[1:],
            env={str(k): str(v) for k, v in config.get("env", {}).items()},
        )
