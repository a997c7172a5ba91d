"""`openapi` servers: a REST API described by an OpenAPI document, one tool per
operation, made by FastMCP's OpenAPI support (`FastMCP.from_openapi`: parameters and
bodies as JSON Schema, `$ref`s within the document resolved) and served in the service;
every request it makes goes through the outbound guard (each redirect checked again)."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx2
from fastmcp import Client as FastMCPClient
from fastmcp import FastMCP
from fastmcp.server.providers.openapi import MCPType, RouteMap
from mcp import types

from app.services.mcp.proxy import PinnedTransport, ServerPlan
from app.utils import safe_yaml

MAX_SPEC_BYTES = 5 * 1024 * 1024
MAX_REDIRECTS = 5


def parse_spec(text: str) -> dict[str, Any]:
    """A document given as JSON or YAML text; ValueError if it is neither an object."""
    try:
        data = json.loads(text)
    except ValueError:
        data = safe_yaml.load(text)
    if not isinstance(data, dict):
        raise ValueError("an OpenAPI document is an object")
    return data


def build_server(name: str, spec: dict[str, Any], config: dict[str, Any], http: Any) -> FastMCP:
    """The operations as tools; the config's `exclude` filters leave some out."""
    maps = [
        RouteMap(
            methods=f.get("methods") or "*",
            pattern=f.get("path") or ".*",
            tags=set(f.get("tags") or ()),
            mcp_type=MCPType.EXCLUDE,
        )
        for f in config.get("exclude", [])
    ]
    maps.append(RouteMap(mcp_type=MCPType.TOOL))
    return FastMCP.from_openapi(openapi_spec=spec, client=http, name=name, route_maps=maps)


def check_document(spec: dict[str, Any], config: dict[str, Any]) -> None:
    """Raises (ValueError and the like) unless the document makes a server."""
    build_server("check", spec, config, httpx2.AsyncClient(base_url="http://unused.invalid"))


@dataclass
class _Page:
    tools: list[types.Tool]
    next_cursor: str | None = None


class OpenApiClient:
    """The generated server, reached in-process; shaped like the MCP client the proxy
    uses for remote servers."""

    def __init__(self, client: FastMCPClient[Any]) -> None:
        self._client = client

    async def list_tools(self, cursor: str | None = None) -> _Page:
        del cursor
        return _Page(list(await self._client.list_tools()))

    async def call_tool(
        self, name: str, arguments: dict[str, Any], read_timeout_seconds: float | None = None
    ) -> Any:
        return await self._client.call_tool(
            name, arguments, timeout=read_timeout_seconds, raise_on_error=False
        )


async def _spec_of(plan: ServerPlan, transport: PinnedTransport) -> dict[str, Any]:
    config = plan.config
    if config.get("spec") is not None:
        spec = config["spec"]
        return spec if isinstance(spec, dict) else parse_spec(str(spec))
    async with (
        httpx2.AsyncClient(
            transport=transport,
            timeout=plan.timeout_seconds,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
        ) as http,
        http.stream("GET", str(config["spec_url"])) as response,
    ):
        response.raise_for_status()
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_SPEC_BYTES:
                raise ValueError(f"the document is larger than {MAX_SPEC_BYTES} bytes")
    return parse_spec(body.decode())


async def connect_openapi(
    plan: ServerPlan, allow_hosts: tuple[str, ...], stack: AsyncExitStack
) -> OpenApiClient:
    config = plan.config
    transport = PinnedTransport(allow_hosts)
    spec = await _spec_of(plan, PinnedTransport(allow_hosts))
    basic = config.get("basic")
    http = await stack.enter_async_context(
        httpx2.AsyncClient(
            base_url=str(config["base_url"]),
            headers={str(k): str(v) for k, v in config.get("headers", {}).items()},
            params={str(k): str(v) for k, v in config.get("query", {}).items()},
            auth=httpx2.BasicAuth(basic["username"], basic["password"]) if basic else None,
            transport=transport,
            timeout=plan.timeout_seconds,
            # A redirect would carry the config's credentials to wherever it points.
            follow_redirects=False,
        )
    )
    server = build_server(plan.name, spec, config, http)
    client = await stack.enter_async_context(FastMCPClient(server))
    return OpenApiClient(client)
