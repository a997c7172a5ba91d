"""The service's side of a tenant MCP server: it connects (HTTP through the outbound
guard, the checked address pinned for the connection), lists the tools the tenant
allows, and serves them to the CLI as an in-process SDK server that forwards each call,
so the CLI never holds the server's credentials nor opens a connection itself."""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import os
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import httpx2
import structlog
from claude_agent_sdk import McpSdkServerConfig, SdkMcpTool, create_sdk_mcp_server
from mcp import Client, types
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from app.services.mcp.stdio import StdioJail
from app.utils.addresses import BlockedAddressError, resolve_public

log = structlog.get_logger(__name__)

# What one tool result may hold before it is cut (the agent is told): under the CLI's
# own limit for MCP output (~25,000 tokens), past which it writes the result to a file
# outside the workspace, where the policy will not let the agent read it.
MAX_RESULT_CHARS = 40_000
REDACTED = "[redacted]"


class ToolClient(Protocol):
    """What the proxy needs of a server's client: an MCP client, or the in-process
    client of a server generated from an OpenAPI document."""

    async def list_tools(self, *, cursor: str | None = None) -> Any: ...

    async def call_tool(
        self, name: str, arguments: dict[str, Any], read_timeout_seconds: float | None = None
    ) -> Any: ...


@dataclass(frozen=True)
class ServerPlan:
    """One server as a run connects to it: its config with every placeholder already
    substituted (values held in memory only), and the secrets to redact from results."""

    name: str
    type: str
    config: dict[str, Any]
    allowed_tools: tuple[str, ...] | None
    timeout_seconds: float
    secret_values: tuple[str, ...] = ()
    # The stored config's digest (placeholders, never values) and the server's
    # description: what the run's spec holds of it.
    digest: str = ""
    description: str | None = None


class PinnedTransport(httpx2.AsyncBaseTransport):
    """Each request goes to an address the outbound guard checked for its host, pinned
    for the life of the transport (no second resolution, so no DNS rebinding); TLS still
    verifies the host's name."""

    def __init__(self, allow_hosts: Iterable[str]) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._allow_hosts = tuple(allow_hosts)
        self._pins: dict[tuple[str, int], str] = {}

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        address = self._pins.get((host, port))
        if address is None:
            address = await resolve_public(host, port, allow_hosts=self._allow_hosts)
            self._pins[(host, port)] = address
        if address != host:
            request.url = url.copy_with(host=address)
            request.headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _http_client(plan: ServerPlan, allow_hosts: Iterable[str], **kwargs: Any) -> httpx2.AsyncClient:
    headers = {str(k): str(v) for k, v in plan.config.get("headers", {}).items()}
    timeout = httpx2.Timeout(plan.timeout_seconds, read=max(plan.timeout_seconds, 300.0))
    return httpx2.AsyncClient(
        transport=PinnedTransport(allow_hosts),
        headers={**headers, **kwargs.pop("headers", {})},
        timeout=timeout,
        follow_redirects=False,
        **kwargs,
    )


async def connect(
    plan: ServerPlan,
    allow_hosts: Iterable[str],
    stack: AsyncExitStack,
    stdio: StdioJail | None = None,
) -> Client:
    """A connected client of the server, closed with `stack`."""
    if plan.type == "stdio":
        if stdio is None:
            raise RuntimeError("STDIO servers run only in the agent jail, which is off here")
        # What the server prints on stderr (its environment, say) is not logged.
        errlog = stack.enter_context(open(os.devnull, "w"))  # noqa: SIM115, ASYNC230 (/dev/null)
        transport: Any = stdio_client(stdio.parameters(plan.config), errlog=errlog)
        return await _enter(
            Client(transport, read_timeout_seconds=plan.timeout_seconds), plan, stack
        )
    url = str(plan.config["url"])
    if plan.type == "http":
        http = await stack.enter_async_context(_http_client(plan, allow_hosts))
        transport = streamable_http_client(url, http_client=http)
    elif plan.type == "sse":

        def factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            return _http_client(plan, allow_hosts, headers=headers or {}, auth=auth)

        transport = sse_client(url, timeout=plan.timeout_seconds, httpx_client_factory=factory)
    else:
        raise ValueError(f"MCP servers of type {plan.type} are not supported yet")
    return await _enter(Client(transport, read_timeout_seconds=plan.timeout_seconds), plan, stack)


async def _enter(client: Client, plan: ServerPlan, stack: AsyncExitStack) -> Client:
    async with asyncio.timeout(plan.timeout_seconds):
        await stack.enter_async_context(client)
    return client


def _blocked(exc: BaseException) -> bool:
    if isinstance(exc, BlockedAddressError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_blocked(inner) for inner in exc.exceptions)
    return exc.__cause__ is not None and _blocked(exc.__cause__)


def failure_reason(exc: BaseException) -> str:
    """Why a server could not be reached, as the client and the agent are told."""
    if _blocked(exc):
        return "its address is not allowed (not a public address, nor on the operator's list)"
    if isinstance(exc, TimeoutError):
        return "it did not answer in time"
    inner = exc
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return f"it could not be reached ({type(inner).__name__})"


def allowed(tools: Sequence[types.Tool], patterns: Sequence[str] | None) -> list[types.Tool]:
    if patterns is None:
        return list(tools)
    return [t for t in tools if any(fnmatch.fnmatchcase(t.name, p) for p in patterns)]


async def list_allowed_tools(client: ToolClient, plan: ServerPlan) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    async with asyncio.timeout(plan.timeout_seconds):
        while True:
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor or len(tools) > 1000:
                break
    return allowed(tools, plan.allowed_tools)


def _forms(value: str) -> set[str]:
    """A secret as a server may echo it: as is, URL-encoded, JSON-escaped, in base64."""
    raw = value.encode()
    return {
        value,
        quote(value, safe=""),
        quote_plus(value),
        json.dumps(value)[1:-1],
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (in any of its usual forms) replaced."""
    forms = {form for value in secrets for form in _forms(value)}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= 4:
            text = text.replace(form, REDACTED)
    return text


def _content(block: Any, secrets: Sequence[str]) -> dict[str, Any]:
    data = block.model_dump(mode="json", by_alias=True, exclude_none=True)
    if data.get("type") == "text":
        text = redact(str(data.get("text", "")), secrets)
        if len(text) > MAX_RESULT_CHARS:
            text = (
                text[:MAX_RESULT_CHARS]
                + f"\n[cut: the result was longer than {MAX_RESULT_CHARS} characters]"
            )
        return {"type": "text", "text": text}
    if data.get("type") == "image":
        return {"type": "image", "data": data.get("data", ""), "mimeType": data.get("mimeType", "")}
    return {"type": "text", "text": redact(json.dumps(data), secrets)[:MAX_RESULT_CHARS]}


def proxy_server(
    plan: ServerPlan, client: ToolClient, tools: Sequence[types.Tool]
) -> McpSdkServerConfig:
    """The in-process server the CLI gets: the allowed tools, each call forwarded (its
    timing is the tool call's, recorded with the run)."""

    def forwarder(tool: types.Tool) -> SdkMcpTool[Any]:
        async def call(args: dict[str, Any]) -> dict[str, Any]:
            try:
                result = await client.call_tool(
                    tool.name, args, read_timeout_seconds=plan.timeout_seconds
                )
                content = [_content(block, plan.secret_values) for block in result.content]
                return {"content": content, "is_error": bool(result.is_error)}
            except Exception as exc:
                log.warning(
                    "mcp_call_failed",
                    server=plan.name,
                    tool=tool.name,
                    error_type=type(exc).__name__,
                )
                message = redact(
                    f"The tool server {plan.name} failed: {type(exc).__name__}", plan.secret_values
                )
                return {"content": [{"type": "text", "text": message}], "is_error": True}

        # What the server says of its tools reaches the model too: redacted alike.
        description = redact(tool.description or tool.title or tool.name, plan.secret_values)
        schema = json.loads(redact(json.dumps(tool.input_schema), plan.secret_values))
        return SdkMcpTool(
            name=tool.name, description=description, input_schema=schema, handler=call
        )

    return create_sdk_mcp_server(plan.name, tools=[forwarder(t) for t in tools])
