"""A tenant MCP server's connection, for as long as the agent process that uses it lives:
a remote server (HTTP, SSE) or one generated from an OpenAPI document."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import structlog
from mcp import types

from app.services.mcp.openapi import connect_openapi
from app.services.mcp.proxy import ServerPlan, ToolClient, connect, list_allowed_tools
from app.services.mcp.stdio import StdioJail

log = structlog.get_logger(__name__)


@dataclass
class Upstream:
    """One server's connection, owned by a task of its own (its client's task groups
    must be left in the task that entered them), for as long as the agent process that
    uses it lives; `close()` ends it."""

    plan: ServerPlan
    client: ToolClient | None = None
    tools: list[types.Tool] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def open(self, allow_hosts: Iterable[str], stdio: StdioJail | None = None) -> None:
        """Connect and list the allowed tools; raises what failed (within the timeout)."""
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(
            self._own(tuple(allow_hosts), stdio, ready), name=f"mcp-{self.plan.name}"
        )
        try:
            await ready
        except BaseException:
            await self.close()
            raise

    async def _own(
        self, allow_hosts: tuple[str, ...], stdio: StdioJail | None, ready: asyncio.Future[None]
    ) -> None:
        try:
            async with AsyncExitStack() as stack:
                if self.plan.type == "openapi":
                    self.client = await connect_openapi(self.plan, allow_hosts, stack)
                else:
                    self.client = await connect(self.plan, allow_hosts, stack, stdio)
                self.tools = await list_allowed_tools(self.client, self.plan)
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning(
                    "mcp_connection_ended", server=self.plan.name, error_type=type(exc).__name__
                )
        finally:
            self.client = None

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(self._task)
            except (TimeoutError, Exception):
                self._task.cancel()
