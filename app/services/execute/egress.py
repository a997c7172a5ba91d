"""The agent's only way out of its jail: a unix socket the service listens on, one per agent
process, bridged to a loopback port inside the jail's network namespace.

Two kinds of connection come through it:
- a plain HTTP request for the model (the CLI's base URL points at the bridge): sent on to
  the model's endpoint (over TLS where it is https) with its credentials put in here, so
  the agent's process never holds the provider's key; one request per connection;
- `CONNECT host:port` (the CLI's HTTPS_PROXY): tunnelled to the model's https endpoint
  (Bedrock, whose requests the CLI signs itself), or, where the tenant enabled WebFetch,
  to a public address checked by the outbound guard and pinned for the connection.
Anything else is refused.

The gate is open only while a run is: a warm agent process that reaches for the model
between runs is refused, and its session is ended by its owner (`on_breach`)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog

from app.utils.addresses import BlockedAddressError, resolve_public

log = structlog.get_logger(__name__)

MAX_REQUEST_HEAD = 16 * 1024
HEAD_TIMEOUT = 10.0
CONNECT_TIMEOUT = 15.0
CHUNK = 64 * 1024
_TLS = ssl.create_default_context()


@dataclass(frozen=True)
class Endpoint:
    """Where the model is: scheme, host and port of its base URL."""

    scheme: str
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname.lower(), port)


class EgressBridge:
    def __init__(
        self,
        socket_path: Path,
        model: Endpoint,
        *,
        web_access: bool,
        allow_hosts: tuple[str, ...] = (),
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.model = model
        # Headers set on every model request here (lower-case names): the provider's key.
        self.credentials = {k.lower(): v for k, v in (credentials or {}).items()}
        self.web_access = web_access
        self.allow_hosts = allow_hosts
        self.open = False  # a run is open: the agent may call out
        self.on_breach: Callable[[str], None] | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(
            self._accept, path=str(self.socket_path), limit=MAX_REQUEST_HEAD
        )
        self.socket_path.chmod(0o600)

    def close_gate(self) -> None:
        """The run ended: refuse new connections, and end those still open (a pooled
        connection must not carry a request made between runs)."""
        self.open = False
        for task in list(self._connections):
            task.cancel()

    async def close(self) -> None:
        self.close_gate()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if not self.open:
                log.warning("agent_egress_outside_run", socket=self.socket_path.name)
                if self.on_breach is not None:
                    self.on_breach("the agent reached for the network between runs")
                return
            await self._serve(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.warning("agent_egress_failed", exc_info=True)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(HEAD_TIMEOUT):
            first = await reader.readuntil(b"\n")
        if first.startswith(b"CONNECT "):
            async with asyncio.timeout(HEAD_TIMEOUT):
                await reader.readuntil(b"\r\n\r\n")  # its headers say nothing we use
            target = await self._tunnel_target(first)
            if target is None:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            upstream = await self._connect(*target)
            if upstream is None:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await _pipe(reader, writer, *upstream, b"")
            return
        async with asyncio.timeout(HEAD_TIMEOUT):
            head = first + await reader.readuntil(b"\r\n\r\n")
        upstream = await self._connect(self.model.host, self.model.port, tls=self._model_tls)
        if upstream is not None:
            await _pipe(reader, writer, *upstream, self._model_request(head))

    @property
    def _model_tls(self) -> bool:
        return self.model.scheme == "https"

    def _model_request(self, head: bytes) -> bytes:
        """The request head as the model's endpoint must see it: its own Host, the
        provider's credentials, and no keep-alive (so each request is seen here)."""
        lines = head.rstrip(b"\r\n").split(b"\r\n")
        replaced = {"host", "connection", "proxy-connection", *self.credentials}
        kept = [
            line
            for line in lines[1:]
            if line.split(b":", 1)[0].strip().lower().decode("latin-1") not in replaced
        ]
        default_port = 443 if self._model_tls else 80
        host = (
            self.model.host
            if self.model.port == default_port
            else (f"{self.model.host}:{self.model.port}")
        )
        added = [f"Host: {host}".encode(), b"Connection: close"]
        added += [f"{k}: {v}".encode("latin-1") for k, v in self.credentials.items()]
        return b"\r\n".join([lines[0], *added, *kept]) + b"\r\n\r\n"

    async def _tunnel_target(self, request_line: bytes) -> tuple[str, int] | None:
        """The address to tunnel to, checked: the model's endpoint, or (with web access) a
        public address; None if refused."""
        try:
            authority = request_line.split()[1].decode("ascii")
            host, _, port_text = authority.rpartition(":")
            host, port = host.strip("[]").lower(), int(port_text)
        except (IndexError, ValueError, UnicodeDecodeError):
            return None
        if not 0 < port < 65536:
            return None
        if (host, port) == (self.model.host, self.model.port) and self.model.scheme == "https":
            return host, port
        if not self.web_access:
            log.info("agent_egress_refused", host=host, port=port)
            return None
        try:
            address = await resolve_public(host, port, allow_hosts=self.allow_hosts)
        except BlockedAddressError:
            log.info("agent_egress_refused", host=host, port=port)
            return None
        return address, port

    @staticmethod
    async def _connect(
        host: str, port: int, *, tls: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await asyncio.open_connection(
                    host, port, limit=CHUNK, ssl=_TLS if tls else None
                )
        except (OSError, TimeoutError):
            log.info("agent_egress_unreachable", host=host, port=port)
            return None


async def _pipe(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
    first: bytes,
) -> None:
    """Copy both ways until either side closes."""

    async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.write_eof()

    try:
        if first:
            upstream_writer.write(first)
        await asyncio.gather(
            copy(client_reader, upstream_writer), copy(upstream_reader, client_writer)
        )
    finally:
        upstream_writer.close()
        with contextlib.suppress(Exception):
            await upstream_writer.wait_closed()
