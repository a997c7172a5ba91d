"""Real MCP servers for tests, on loopback: a small CRM over streamable HTTP and SSE
(the `mcp` package's own server), recording the headers each request brought."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from mcp.server import MCPServer
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.integration.live_server import serve


class HeaderLog:
    """An ASGI wrapper keeping every request's headers; the CRM's `whoami` reads the
    latest (so a test can see what a server would leak back)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


def crm_server(log: list[HeaderLog]) -> MCPServer:
    server: MCPServer = MCPServer("crm")

    @server.tool()
    def lookup(customer: str) -> str:
        """The customer's tier."""
        return f"{customer}: gold"

    @server.tool()
    def whoami() -> str:
        """The credentials this request brought (a leaky server)."""
        headers = log[0].seen[-1] if log and log[0].seen else {}
        return f"auth={headers.get('authorization')} user={headers.get('x-user')}"

    @server.tool()
    def hidden_tool() -> str:
        """Not for agents."""
        return "should never be called"

    return server


@contextmanager
def crm(transport: str = "http") -> Iterator[tuple[str, HeaderLog]]:
    """The CRM served on loopback: (its MCP URL, its header log)."""
    holder: list[HeaderLog] = []
    server = crm_server(holder)
    app: Any = server.streamable_http_app() if transport == "http" else server.sse_app()
    logged = HeaderLog(app)
    holder.append(logged)
    # Uvicorn runs the wrapped app's lifespan through the wrapper.
    with serve(logged) as base:  # type: ignore[arg-type]
        yield (f"{base}/mcp" if transport == "http" else f"{base}/sse"), logged


class Order(BaseModel):
    item: str
    qty: int


def shop_app() -> tuple[FastAPI, list[dict[str, str]]]:
    """A small REST API with an OpenAPI document; it records each request's headers.
    Its key is checked from the headers, not declared, so no tool asks the agent for it."""
    app = FastAPI()
    seen: list[dict[str, str]] = []

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        seen.append(dict(request.headers))
        return await call_next(request)

    @app.get("/customers/{customer_id}", operation_id="get_customer")
    async def get_customer(customer_id: str) -> dict[str, str]:
        return {"customer": customer_id, "tier": "gold"}

    @app.delete("/customers/{customer_id}", operation_id="delete_customer")
    async def delete_customer(customer_id: str) -> dict[str, str]:
        return {"deleted": customer_id}

    @app.post("/orders", operation_id="create_order")
    async def create_order(order: Order) -> dict[str, object]:
        return {"ordered": order.item, "qty": order.qty}

    @app.get("/whoami", operation_id="whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        return {"key": request.headers.get("x-api-key")}

    @app.get("/big", operation_id="big")
    async def big() -> dict[str, str]:
        return {"text": "x" * 300_000}

    return app, seen
