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
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import structlog

from app.services.execute.answer import AnswerStream
from app.utils.addresses import BlockedAddressError, resolve_public

log = structlog.get_logger(__name__)

MAX_REQUEST_HEAD = 16 * 1024
# Connections one agent process may hold open at once.
MAX_CONNECTIONS = 64
# The requests the CLI makes of its model, under the endpoint's base path (group 2).
_MODEL_REQUEST = re.compile(
    rb"(POST|GET) ((?:/[A-Za-z0-9._~-]+)*)"
    rb"(/v1/messages(?:/count_tokens)?|/model/[A-Za-z0-9._:%-]+/"
    rb"(?:invoke|invoke-with-response-stream|count-tokens)|/inference-profiles)"
    rb"(?:\?[A-Za-z0-9._~%&=+-]*)? HTTP/1\.[01]"
)
HEAD_TIMEOUT = 10.0
# Held answer bytes past this are relayed at once, whatever the hold.
MAX_HELD = 64 * 1024
CONNECT_TIMEOUT = 15.0
_TLS = ssl.create_default_context()


@dataclass(frozen=True)
class Endpoint:
    """Where the model is: scheme, host, port and path of its base URL."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname.lower(), port, parts.path.rstrip("/"))

    def allows(self, request_line: bytes) -> bool:
        """Whether a request is one the CLI makes of its model (Messages, token counts,
        Bedrock's invoke calls): nothing else is sent on with the provider's key."""
        match = _MODEL_REQUEST.fullmatch(request_line)
        return match is not None and match.group(2).decode() == self.path


class EgressBridge:
    def __init__(
        self,
        socket_path: Path,
        model: Endpoint,
        *,
        web_access: bool,
        allow_hosts: tuple[str, ...] = (),
        credentials: Mapping[str, str] | None = None,
        hold: float = 0.0,
    ) -> None:
        self.socket_path = socket_path
        # How long the answer's bytes may be held to go in with those that follow (see
        # _Upstream): 0 relays each chunk as it comes.
        self.hold = hold
        self.model = model
        # Headers set on every model request here (lower-case names): the provider's key.
        self.credentials = {k.lower(): v for k, v in (credentials or {}).items()}
        self.web_access = web_access
        self.allow_hosts = allow_hosts
        self.open = False  # a run is open: the agent may call out
        self.on_breach: Callable[[str], None] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _Connection(self), path=str(self.socket_path)
        )
        self.socket_path.chmod(0o600)

    def close_gate(self) -> None:
        """The run ended: refuse new connections, and end those still open (a pooled
        connection must not carry a request made between runs)."""
        self.open = False
        for connection in list(self._connections):
            connection.abort()

    async def close(self) -> None:
        self.close_gate()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _refused(self) -> None:
        log.warning("agent_egress_outside_run", socket=self.socket_path.name)
        if self.on_breach is not None:
            self.on_breach("the agent reached for the network between runs")

    async def target(self, head: bytes) -> tuple[str, int, bool, bytes, bytes] | None:
        """Where a connection whose request head is `head` goes: (host, port, tls, what
        to send upstream first, what to answer the agent first); None if refused."""
        if head.startswith(b"CONNECT "):
            tunnel = await self._tunnel_target(head.split(b"\r\n", 1)[0])
            if tunnel is None:
                return None
            return *tunnel, False, b"", b"HTTP/1.1 200 Connection Established\r\n\r\n"
        request = self._model_request(head)
        if request is None:
            log.info("agent_egress_refused", request=head[:200].decode("latin-1"))
            return None
        return self.model.host, self.model.port, self._model_tls, request, b""

    @property
    def _model_tls(self) -> bool:
        return self.model.scheme == "https"

    def _model_request(self, head: bytes) -> bytes | None:
        """The request head as the model's endpoint must see it: its own Host, the
        provider's credentials, and no keep-alive (so each request is seen here); None
        for a request the CLI would not make, or a head that is not plain HTTP/1.1."""
        lines = head[:-4].split(b"\r\n")
        if not self.model.allows(lines[0]) or any(
            b"\r" in line or b"\n" in line or b":" not in line for line in lines[1:]
        ):
            return None
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


class _Connection(asyncio.Protocol):
    """One connection from the jail: its request head is read and checked, then bytes are
    relayed both ways by the transports themselves (no task per chunk), each side's
    reading paused while the other cannot take more."""

    def __init__(self, bridge: EgressBridge) -> None:
        self.bridge = bridge
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.head = b""
        self.opening: asyncio.Task[None] | None = None
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.bridge.open:
            self.transport.abort()
            self.bridge._refused()
            return
        if len(self.bridge._connections) >= MAX_CONNECTIONS:
            log.warning("agent_egress_too_many_connections")
            self.transport.abort()
            return
        self.bridge._connections.add(self)
        self.deadline = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self.abort)

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)
            return
        self.head += data
        if self.opening is not None:
            return  # more of the body, held until the upstream is there
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_REQUEST_HEAD:
                self.abort()
            return
        assert self.transport is not None
        self.transport.pause_reading()
        self.opening = asyncio.create_task(self._open(end + 4), name="agent-egress")

    async def _open(self, head_end: int) -> None:
        assert self.transport is not None
        head = self.head[:head_end]
        try:
            target = await self.bridge.target(head)
            if target is None:
                self.transport.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
                return
            host, port, tls, first, answer = target
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(CONNECT_TIMEOUT):
                upstream, _ = await loop.create_connection(
                    lambda: _Upstream(self, merge=not answer),
                    host,
                    port,
                    ssl=_TLS if tls else None,
                    server_hostname=host if tls else None,
                )
        except (OSError, TimeoutError):
            log.info("agent_egress_unreachable", exc_info=True)
            if not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                self.transport.close()
            return
        if self.transport.is_closing():
            upstream.close()
            return
        if self.deadline is not None:
            self.deadline.cancel()
        self.upstream = upstream
        if answer:
            self.transport.write(answer)
        rest, self.head = self.head[head_end:], b""
        if first or rest:
            self.upstream.write(first + rest)
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        if self.upstream is None:
            return False
        if self.upstream.can_write_eof():
            self.upstream.write_eof()
        return True  # half-closed: the answer may still come

    def connection_lost(self, exc: Exception | None) -> None:
        self.bridge._connections.discard(self)
        if self.deadline is not None:
            self.deadline.cancel()
        if self.opening is not None and not self.opening.done():
            self.opening.cancel()
        if self.upstream is not None:
            self.upstream.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        if self.upstream is not None:
            self.upstream.abort()


class _Upstream(asyncio.Protocol):
    """The connection to the model or a checked web address, relaying to the jail.

    A model streams its answer a token or two a write: relayed as they come, the agent
    wakes, reads and parses once per token, which costs it more CPU than the same tokens
    read a few at a time. So a chunk that follows another within `hold` seconds waits
    until `hold` after that write, and goes in one write with the rest that came
    meanwhile, its text deltas merged (`answer.AnswerStream`): a lone chunk is never
    delayed, and none more than `hold`."""

    def __init__(self, client: _Connection, merge: bool) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.hold = client.bridge.hold
        self.answer = AnswerStream(merge and self.hold > 0)
        self.release: asyncio.TimerHandle | None = None
        self.written = float("-inf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.client.transport is None:
            return
        self.answer.feed(data)
        loop = asyncio.get_running_loop()
        if self.release is None and loop.time() - self.written >= self.hold:
            self._write()
        elif self.answer.pending >= MAX_HELD:
            self._flush()
        elif self.release is None:
            self.release = loop.call_at(self.written + self.hold, self._flush)

    def _flush(self) -> None:
        if self.release is not None:
            self.release.cancel()
            self.release = None
        self._write()

    def _write(self) -> None:
        data = self.answer.take()
        if data and self.client.transport is not None:
            self.client.transport.write(data)
            self.written = asyncio.get_running_loop().time()

    def eof_received(self) -> bool:
        self._flush()
        client = self.client.transport
        if client is not None and client.can_write_eof():
            client.write_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._flush()
        if self.client.transport is not None:
            self.client.transport.close()

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()
