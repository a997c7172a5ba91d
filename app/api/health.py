"""Liveness, readiness, database health and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError, SQLAlchemyError

from app.api.routing import ServiceRoute
from app.errors import ServiceUnavailableError, error_responses
from app.schemas.common import ANSWERS_IN_FULL
from app.services import metrics as metrics_of

router = APIRouter(route_class=ServiceRoute, tags=["health"])


class HealthRead(BaseModel):
    model_config = ANSWERS_IN_FULL

    status: Literal["ok"]
    database: Literal["ok"] | None = None
    schema_revision: str | None = None
    agent_sandbox: Literal["on", "off", "unavailable"] | None = Field(
        None,
        description="on: agents run jailed; off: an operator turned the jail off "
        "(AGENT_SANDBOX=off); unavailable: no jail can be made here, so runs are refused.",
    )
    node_id: str | None = Field(None, description="This node's id")
    roles: list[str] | None = Field(None, description="api, worker, or both")
    takes_runs: bool | None = Field(
        None, description="A worker that can run agents now (not stopping, a jail at hand)"
    )


async def _schema_revision(request: Request) -> str | None:
    """The migration the database is at (None before the first one); 503 if unreachable."""
    try:
        async with request.app.state.engine.connect() as conn:
            try:
                revision = await conn.scalar(text("SELECT version_num FROM alembic_version"))
                return str(revision) if revision is not None else None
            except ProgrammingError:  # no alembic_version table yet
                return None
    except (SQLAlchemyError, OSError) as exc:
        raise ServiceUnavailableError("The database is not reachable") from exc


@router.get("/health", response_model=HealthRead, responses=error_responses(503))
async def health(request: Request) -> HealthRead:
    """The service and its database."""
    revision = await _schema_revision(request)
    return HealthRead(
        status="ok",
        database="ok",
        schema_revision=revision,
        agent_sandbox=request.app.state.agent_sandbox,
        **_node(request),
    )


def _node(request: Request) -> dict[str, Any]:
    """This node: its id, roles, and whether it takes runs now."""
    state = request.app.state
    cluster, executor, worker = state.cluster, state.executor, state.worker
    return {
        "node_id": cluster.node_id,
        "roles": cluster.roles,
        "takes_runs": worker is not None
        and worker.worker is not None
        and not executor.closing
        and executor.ctx.agent.refusal is None,
    }


@router.get("/health/live", response_model=HealthRead)
async def live() -> HealthRead:
    """The process is up (no dependency checked)."""
    return HealthRead(status="ok")


@router.get("/health/ready", response_model=HealthRead, responses=error_responses(503))
async def ready(request: Request) -> HealthRead:
    """Ready for traffic: the database answers and its schema is the one this code expects."""
    revision = await _schema_revision(request)
    if revision != request.app.state.schema_head:
        raise ServiceUnavailableError(
            f"The database schema is at {revision}, expected {request.app.state.schema_head}"
        )
    return HealthRead(status="ok", database="ok", schema_revision=revision, **_node(request))


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format: this node's, and the runs and
    nodes of the whole service (from the database, when it answers)."""
    state = request.app.state
    executor, cluster = state.executor, state.cluster
    metrics_of.NODE_INFO.labels(cluster.node_id, ",".join(cluster.roles)).set(1)
    metrics_of.RUNNING.set(executor.running)
    metrics_of.WAITING.set(executor.waiting)
    metrics_of.WARM.set(len(executor.ctx.warm))
    await asyncio.to_thread(metrics_of.sample_processes)
    try:
        async with state.sessionmaker() as session:
            await metrics_of.sample_cluster(session)
    except (SQLAlchemyError, OSError):
        pass  # this node's figures are still worth having
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
