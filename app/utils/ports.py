"""A free TCP port: for the servers the service, its tools and its tests start on the
loopback interface."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (the OS picks it; another process may take it before
    the caller binds, which these local uses accept)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
