"""A tenant's MCP server configs (placeholders kept as written), and what a run makes of
them: each active server's config with its placeholders substituted, in memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import StdioCommand
from app.errors import ConflictError, UnprocessableError
from app.models import McpServer
from app.schemas.integrations import CONFIG_BY_TYPE, McpServerWrite
from app.services.integrity import flush_mapping_violations
from app.services.mcp import placeholders
from app.services.mcp.openapi import check_document, parse_spec
from app.services.mcp.proxy import ServerPlan
from app.services.mcp.stdio import allowed_command
from app.services.pagination import paginate
from app.services.scope import TenantScope
from app.services.secrets import Vault, read_secrets

# The service's own servers a tenant may add by name (`present_files` is always there).
BUILTINS: dict[str, tuple[str, list[str]]] = {
    "workspace": ("The conversation's files: show files to the user", ["present_files"]),
    "web": (
        "Fetch public web pages, through the service's outbound guard (the agent's own "
        "process stays offline)",
        ["fetch"],
    ),
}
SUPPORTED_TYPES = ("http", "sse", "builtin", "openapi", "stdio")
_CONFLICTS = {
    "uq_mcp_servers_tenant_id_name": lambda: ConflictError(
        "The tenant has an MCP server of that name", code="SERVER_EXISTS"
    )
}


def _checked_config(body: McpServerWrite, stdio_commands: Sequence[StdioCommand]) -> dict[str, Any]:
    if body.type not in SUPPORTED_TYPES:
        raise UnprocessableError(
            f"MCP servers of type {body.type} are not supported yet "
            f"(supported: {', '.join(SUPPORTED_TYPES)})",
            code="UNSUPPORTED_SERVER_TYPE",
        )
    model = CONFIG_BY_TYPE[body.type]
    try:
        config = model.model_validate(body.config).model_dump(exclude_none=True)
    except ValidationError as exc:
        details = [{"loc": ["config", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
        raise UnprocessableError(
            f"The config of a {body.type} server is not valid", details=details
        ) from exc
    if body.type == "stdio":
        allowed_command(config, stdio_commands)
        placeholders.check(config["env"])
        if placeholders.ANY_PLACEHOLDER.search(json.dumps([config["command"], config["args"]])):
            raise UnprocessableError(
                "Placeholders may be in a STDIO server's environment, not its command line",
                code="BAD_PLACEHOLDER",
            )
        return config
    if body.type == "openapi":
        _check_openapi(config)
        placeholders.check({k: v for k, v in config.items() if k != "spec"})
        return config
    placeholders.check(config)
    if body.type in ("http", "sse"):
        url = urlsplit(config["url"])
        if placeholders.ANY_PLACEHOLDER.search(f"{url.scheme}://{url.netloc}{url.path}"):
            raise UnprocessableError(
                "Placeholders may be in a server's headers and its URL's query, not in its "
                "host or path",
                code="BAD_PLACEHOLDER",
            )
        if not url.hostname:
            raise UnprocessableError("The server's URL needs a host")
    return config


def _check_openapi(config: dict[str, Any]) -> None:
    if ("spec" in config) == ("spec_url" in config):
        raise UnprocessableError("Give the OpenAPI document as `spec` or `spec_url` (one)")
    for key in ("base_url", "spec_url"):
        if key in config and placeholders.ANY_PLACEHOLDER.search(config[key]):
            raise UnprocessableError(
                f"Placeholders may be in headers, query and basic, not in `{key}`",
                code="BAD_PLACEHOLDER",
            )
    for rule in config.get("exclude", []):
        try:
            re.compile(rule.get("path") or "")
        except re.error as exc:
            raise UnprocessableError(
                f"exclude: {rule.get('path')!r} is not a regular expression", code="BAD_OPENAPI"
            ) from exc
    if "spec" in config:
        try:
            spec = (
                config["spec"] if isinstance(config["spec"], dict) else parse_spec(config["spec"])
            )
            check_document(spec, config)
        except Exception as exc:
            raise UnprocessableError(
                f"The OpenAPI document cannot be used: {str(exc)[:300]}", code="BAD_OPENAPI"
            ) from exc


async def create_server(
    session: AsyncSession,
    scope: TenantScope,
    body: McpServerWrite,
    stdio_commands: Sequence[StdioCommand] = (),
) -> McpServer:
    row = McpServer(server_id=uuid.uuid4(), tenant_id=scope.tenant_id)
    await _fill(row, body, stdio_commands)
    session.add(row)
    await flush_mapping_violations(session, _CONFLICTS)
    await session.refresh(row)
    return row


async def _fill(
    row: McpServer, body: McpServerWrite, stdio_commands: Sequence[StdioCommand]
) -> None:
    row.config = await asyncio.to_thread(_checked_config, body, stdio_commands)
    row.name, row.type = body.name, body.type
    row.allowed_tools = body.allowed_tools
    row.description = body.description
    row.status = body.status
    row.timeout_seconds = body.timeout_seconds


async def get_server(
    session: AsyncSession, scope: TenantScope, server_id: uuid.UUID, *, for_update: bool = False
) -> McpServer:
    return await scope.get(
        session,
        McpServer,
        McpServer.server_id,
        server_id,
        resource="MCP server",
        for_update=for_update,
    )


async def replace_server(
    session: AsyncSession,
    scope: TenantScope,
    server_id: uuid.UUID,
    body: McpServerWrite,
    stdio_commands: Sequence[StdioCommand] = (),
) -> McpServer:
    row = await get_server(session, scope, server_id, for_update=True)
    await _fill(row, body, stdio_commands)
    await flush_mapping_violations(session, _CONFLICTS)
    await session.refresh(row)
    return row


async def delete_server(session: AsyncSession, scope: TenantScope, server_id: uuid.UUID) -> None:
    row = await get_server(session, scope, server_id, for_update=True)
    await session.delete(row)
    await session.flush()


async def list_servers(
    session: AsyncSession, scope: TenantScope, *, limit: int, offset: int
) -> tuple[list[McpServer], int]:
    query = scope.select(McpServer).order_by(McpServer.name)
    return await paginate(session, query, limit=limit, offset=offset)


async def plan_servers(
    session: AsyncSession,
    vault: Vault,
    scope: TenantScope,
    servers: Sequence[McpServer],
    *,
    tokens: Mapping[str, str],
    user_id: str | None,
    conversation_id: uuid.UUID | None,
) -> list[ServerPlan]:
    """Each remote server as a run connects to it, placeholders substituted (422 naming
    the server and the placeholder when one has no value). A server gets only the
    secrets and tokens its own config names."""
    plans = []
    for server in servers:
        if server.type == "builtin":
            plans.append(
                ServerPlan(
                    name=server.name,
                    type="builtin",
                    config=dict(server.config),
                    allowed_tools=None,
                    timeout_seconds=server.timeout_seconds,
                    digest=_digest(server),
                    description=server.description,
                )
            )
            continue
        # An OpenAPI document is text of its own: nothing in it is a placeholder.
        configurable = {k: v for k, v in server.config.items() if k != "spec"}
        wanted = placeholders.check(configurable)
        secrets = await read_secrets(
            session, vault, scope.tenant_id, [n for kind, n in wanted if kind == "secrets"]
        )
        values: dict[placeholders.Key, str] = {
            ("tenant", "id"): scope.tenant_id,
            **{("secrets", k): v for k, v in secrets.items()},
            **{("request", k): v for k, v in tokens.items() if ("request", k) in wanted},
        }
        if user_id is not None:
            values[("user", "id")] = user_id
        if conversation_id is not None:
            values[("conversation", "id")] = str(conversation_id)
        config = {**server.config, **placeholders.substitute(configurable, values, server.name)}
        if "url" in configurable:  # in a URL's query, a value is one parameter's, encoded
            encoded = {key: quote(value, safe="") for key, value in values.items()}
            config["url"] = placeholders.substitute(configurable["url"], encoded, server.name)
        sensitive = tuple(v for (kind, _), v in values.items() if kind in ("secrets", "request"))
        plans.append(
            ServerPlan(
                name=server.name,
                type=server.type,
                config=config,
                allowed_tools=tuple(server.allowed_tools)
                if server.allowed_tools is not None
                else None,
                timeout_seconds=server.timeout_seconds,
                secret_values=sensitive,
                digest=_digest(server),
                description=server.description,
            )
        )
    return plans


def _digest(server: McpServer) -> str:
    shape = [server.type, server.config, server.allowed_tools, server.timeout_seconds]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


async def run_servers(
    session: AsyncSession, scope: TenantScope, only: Sequence[str] | None
) -> list[McpServer]:
    """The tenant's active servers for a run, narrowed to `only` (names; an unknown or
    disabled one is a 422)."""
    rows = list(
        (
            await session.execute(
                scope.select(McpServer).where(McpServer.status == "active").order_by(McpServer.name)
            )
        ).scalars()
    )
    if only is None:
        return rows
    known = {row.name for row in rows}
    missing = [name for name in only if name not in known]
    if missing:
        raise UnprocessableError(
            f"Not an active MCP server of this tenant: {', '.join(missing)[:500]}",
            code="UNKNOWN_MCP_SERVER",
        )
    return [row for row in rows if row.name in set(only)]
