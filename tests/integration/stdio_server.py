"""A STDIO MCP server for tests: it reports what its jail lets it see."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from mcp.server import MCPServer

server: MCPServer = MCPServer("local")


@server.tool()
def env_digest(name: str) -> str:
    """The sha256 of an environment variable (the value itself would be redacted)."""
    return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()


@server.tool()
def read(path: str) -> str:
    """A file's first bytes, if this process can read it."""
    try:
        return Path(path).read_text()[:200]
    except OSError as exc:
        return f"cannot read: {type(exc).__name__}"


@server.tool()
def connect(host: str, port: int) -> str:
    """Whether a TCP connection can be made."""
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except OSError as exc:
        return f"cannot connect: {type(exc).__name__}"


if __name__ == "__main__":
    server.run("stdio")
