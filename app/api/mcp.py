"""Routes of a tenant's MCP servers: configs, the built-in catalogue, and a connection
test through the same path a run uses."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from app.api.deps import CurrentScope, DbSession, HeaderUserId, Pagination, retire_warm_sessions
from app.api.routing import ServiceRoute, path_convertor
from app.errors import UnprocessableError, error_responses
from app.schemas.common import Page
from app.schemas.integrations import (
    BuiltinServerRead,
    McpServerRead,
    McpServerWrite,
    McpTestRequest,
    McpToolRead,
)
from app.services.execute.executor import RunExecutor
from app.services.mcp import servers as service
from app.services.mcp.proxy import failure_reason
from app.services.mcp.servers import BUILTINS
from app.services.mcp.upstream import Upstream

router = APIRouter(
    route_class=ServiceRoute, prefix="/api/tenants/{tenant_id}/mcp-servers", tags=["mcp"]
)

ServerPath = Annotated[uuid.UUID, Path(description="The server's id")]
# A server id is any segment but `builtin` (the list of the service's own servers).
path_convertor("server_id", "(?!builtin$)[^/]+")
_ONE = error_responses(401, 403, 404, 422)


@router.get("", response_model=Page[McpServerRead], responses=_ONE)
async def list_servers(
    scope: CurrentScope, session: DbSession, page: Pagination
) -> Page[McpServerRead]:
    rows, total = await service.list_servers(session, scope, limit=page.limit, offset=page.offset)
    return Page(items=[McpServerRead.model_validate(r) for r in rows], total=total)


@router.post(
    "",
    response_model=McpServerRead,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(401, 403, 404, 409, 422),
)
async def create_server(
    request: Request, scope: CurrentScope, session: DbSession, body: McpServerWrite
) -> McpServerRead:
    """A server the tenant's agents reach through the service. Credentials go in headers
    as `${secrets.NAME}` or `${request.NAME}` (a token of the stream request)."""
    commands = request.app.state.settings.mcp_stdio_commands
    row = await service.create_server(session, scope, body, commands)
    retire_warm_sessions(request, scope.tenant_id)
    return McpServerRead.model_validate(row)


@router.get("/builtin", response_model=list[BuiltinServerRead], responses=_ONE)
async def list_builtin(scope: CurrentScope) -> list[BuiltinServerRead]:
    """The service's own servers, added with `{"type": "builtin", "config": {"name": …}}`."""
    del scope
    return [
        BuiltinServerRead(name=name, description=description, tools=tools)
        for name, (description, tools) in BUILTINS.items()
    ]


@router.get("/{server_id:server_id}", response_model=McpServerRead, responses=_ONE)
async def get_server(
    scope: CurrentScope, session: DbSession, server_id: ServerPath
) -> McpServerRead:
    return McpServerRead.model_validate(await service.get_server(session, scope, server_id))


@router.put(
    "/{server_id:server_id}",
    response_model=McpServerRead,
    responses=error_responses(401, 403, 404, 409, 422),
)
async def replace_server(
    request: Request,
    scope: CurrentScope,
    session: DbSession,
    server_id: ServerPath,
    body: McpServerWrite,
) -> McpServerRead:
    commands = request.app.state.settings.mcp_stdio_commands
    row = await service.replace_server(session, scope, server_id, body, commands)
    retire_warm_sessions(request, scope.tenant_id)
    return McpServerRead.model_validate(row)


@router.delete(
    "/{server_id:server_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_ONE,
)
async def delete_server(
    request: Request, scope: CurrentScope, session: DbSession, server_id: ServerPath
) -> Response:
    await service.delete_server(session, scope, server_id)
    retire_warm_sessions(request, scope.tenant_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{server_id:server_id}/test", response_model=list[McpToolRead], responses=_ONE)
async def test_server(
    request: Request,
    scope: CurrentScope,
    session: DbSession,
    user_id: HeaderUserId,
    server_id: ServerPath,
    body: McpTestRequest,
) -> list[McpToolRead]:
    """Connect as a run would (placeholders, outbound guard) and list the tools the agent
    would get; 422 `MCP_CONNECT_FAILED` saying why not."""
    row = await service.get_server(session, scope, server_id)
    if row.type == "builtin":
        _, tools = BUILTINS[row.config["name"]]
        return [McpToolRead(name=t, description=None, input_schema={}) for t in tools]
    (plan,) = await service.plan_servers(
        session,
        request.app.state.vault,
        scope,
        [row],
        tokens=body.tokens,
        user_id=user_id,
        conversation_id=None,
    )
    await session.commit()  # nothing is held while the server answers
    upstream = Upstream(plan)
    try:
        executor: RunExecutor = request.app.state.executor
        await upstream.open(
            request.app.state.settings.outbound_allow_hosts, executor.ctx.agent.stdio
        )
    except Exception as exc:
        raise UnprocessableError(
            f"MCP server {row.name}: {failure_reason(exc)}", code="MCP_CONNECT_FAILED"
        ) from exc
    try:
        return [
            McpToolRead(name=t.name, description=t.description, input_schema=t.input_schema)
            for t in upstream.tools
        ]
    finally:
        await upstream.close()
