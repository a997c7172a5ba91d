"""The application factory and its lifespan (settings, database, migrations)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.exc import SQLAlchemyError

from app import db
from app.api import (
    api_keys,
    conversations,
    execute,
    health,
    mcp,
    models,
    secrets,
    skills,
    tenants,
    usage,
    workspace,
)
from app.api.openapi import install_openapi
from app.config import ModelProvider, Settings
from app.errors import install_error_handlers
from app.log_config import configure_logging
from app.middleware import RequestContextMiddleware
from app.request_limits import RequestLimitsMiddleware
from app.schemas.integrations import (
    BuiltinServerConfig,
    OpenApiServerConfig,
    RemoteServerConfig,
    StdioServerConfig,
)
from app.schemas.runs import StreamRequest, StreamUpload
from app.schemas.skills import SkillCreate, SkillUpload
from app.services.cluster import Cluster, node_id_for
from app.services.execute.cache import WorkspaceCache
from app.services.execute.executor import RunExecutor
from app.services.execute.jail import Jail, find_bwrap, install_launcher
from app.services.execute.limits import StartGate
from app.services.execute.offline_model import OfflineModelServer
from app.services.execute.providers import Provider, resolve_provider
from app.services.execute.queue import RunWorker
from app.services.execute.runner import ExecutionContext
from app.services.execute.session_store import PostgresSessionStore
from app.services.execute.spec import AgentRuntime, bundled_cli
from app.services.execute.warm import WarmSessions
from app.services.mcp.stdio import StdioJail
from app.services.secrets import Vault
from app.services.storage import create_store
from app.services.workspace import FileCaps
from app.utils.background import Background

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    settings.ensure_development_secrets()
    app.state.vault = Vault(settings.vault_keys)
    url, embedded = await db.resolve_database_url(settings)
    if settings.db_auto_migrate:
        await db.migrate(url)
    engine = db.create_engine(url, settings)
    app.state.engine = engine
    app.state.sessionmaker = db.create_sessionmaker(engine)
    app.state.schema_head = ScriptDirectory.from_config(db.alembic_config(url)).get_current_head()
    cluster = Cluster(
        url,
        app.state.sessionmaker,
        node_id=node_id_for(settings.data_dir, settings.node_id),
        roles=settings.node_roles,
        heartbeat_seconds=settings.node_heartbeat_seconds,
        timeout_seconds=settings.node_timeout_seconds,
        queue_timeout_seconds=settings.run_queue_timeout,
    )
    app.state.cluster = cluster
    offline_model = None
    if settings.provider is ModelProvider.OFFLINE:
        offline_model = OfflineModelServer()
        await asyncio.to_thread(offline_model.start)
    app.state.offline_model = offline_model
    provider = resolve_provider(
        settings, offline_model.url if offline_model else None, dict(os.environ)
    )
    app.state.store = create_store(settings.storage, settings.data_dir)
    app.state.file_caps = FileCaps(settings.max_file_bytes, settings.max_file_bytes_by_type)
    app.state.background = Background()
    cache = WorkspaceCache(settings.data_dir, settings.workspace_cache_bytes)
    await cache.load()
    runtime_dir = Path(tempfile.mkdtemp(prefix="cmab-agents-"))
    agent = await _agent_runtime(settings, provider, app.state.sessionmaker, runtime_dir)
    app.state.agent_sandbox = (
        "on" if agent.jail is not None else "unavailable" if agent.refusal else "off"
    )
    app.state.executor = RunExecutor(
        ExecutionContext(
            sessionmaker=app.state.sessionmaker,
            agent=agent,
            warm=WarmSessions(settings.max_warm_sessions, settings.session_idle_seconds),
            store=app.state.store,
            file_caps=app.state.file_caps,
            cache=cache,
            startups=StartGate(settings.agent_startups or os.cpu_count() or 2),
            run_timeout=settings.run_timeout,
        ),
        max_running=settings.max_concurrent_runs,
        node_max_running=settings.node_max_runs or settings.max_concurrent_runs,
        queue_timeout=settings.run_queue_timeout,
        cluster=cluster,
        vault=app.state.vault,
    )
    try:
        interrupted = await cluster.start(recover=settings.recover_runs_on_start)
        if interrupted:
            log.warning("runs_interrupted_at_start", count=interrupted)
    except (SQLAlchemyError, OSError) as exc:
        # Not migrated yet, or unreachable: /health/ready says so; start anyway.
        log.warning("node_start_failed", error_type=type(exc).__name__)
    log.info(
        "service_started",
        env=settings.app_env.value,
        database=url.render_as_string(),
        model_provider=provider.name.value,
        wire=provider.wire,
        agent_sandbox=app.state.agent_sandbox,
        node_id=cluster.node_id,
        roles=",".join(cluster.roles),
    )
    worker = None
    if "worker" in cluster.roles and agent.refusal is not None:
        log.error("worker_without_jail", message="This node takes no runs: it cannot jail agents")
    elif "worker" in cluster.roles:
        worker = RunWorker.start(
            url,
            app.state.executor.run_claimed,
            node_id=cluster.node_id,
            # Runs waiting for a slot hold a job too.
            concurrency=app.state.executor.node_max_running + settings.max_queued_runs,
            heartbeat_seconds=settings.node_heartbeat_seconds,
            timeout_seconds=settings.node_timeout_seconds,
            ready=cluster.registered,
        )
        app.state.executor.on_stop = worker.stop_taking_jobs
    app.state.worker = worker
    try:
        yield
    finally:
        if worker is not None:
            worker.stop_taking_jobs()
        await app.state.executor.shutdown(settings.shutdown_timeout)
        if worker is not None:
            await worker.close()
        await cluster.stop()
        await app.state.background.drain(settings.shutdown_timeout)
        shutil.rmtree(runtime_dir, ignore_errors=True)
        if offline_model is not None:
            await asyncio.to_thread(offline_model.stop)
        await engine.dispose()
        if embedded is not None:
            # Uvicorn ends on the signal it caught, so atexit hooks are not to be relied on.
            await asyncio.to_thread(embedded.cleanup)
        log.info("service_stopped")


async def _agent_runtime(
    settings: Settings, provider: Provider, sessionmaker: Any, runtime_dir: Path
) -> AgentRuntime:
    """How agent processes start here: in a jail when one can be made; else runs are
    refused, unless an operator set AGENT_SANDBOX=off."""
    allow_hosts = tuple(settings.outbound_allow_hosts)
    jail, refusal = None, None
    bwrap = settings.agent_bwrap or find_bwrap()
    if settings.agent_sandbox == "on":
        if bwrap is None:
            refusal = "bubblewrap (bwrap) is not installed"
        else:
            jail = Jail.create(
                bwrap, bundled_cli(), runtime_dir, settings.agent_stream_hold_ms / 1000
            )
            refusal = await jail.probe()
            if refusal is not None:
                jail = None
        if refusal is not None:
            log.error("agent_sandbox_unavailable", reason=refusal)
    else:
        log.warning(
            "agent_sandbox_off",
            message="AGENT_SANDBOX=off: agents run unjailed, sharing this host's files, "
            "processes and network; never do this where tenants are untrusted",
        )
    return AgentRuntime(
        data_dir=settings.data_dir,
        provider=provider,
        launcher=install_launcher(settings.data_dir),
        session_store=PostgresSessionStore(sessionmaker, settings.data_dir / "workspaces"),
        max_retries=settings.model_max_retries,
        nice=settings.agent_nice,
        answering_nice=max(settings.agent_nice, settings.agent_answering_nice),
        runtime_dir=runtime_dir,
        jail=jail,
        bwrap=bwrap,
        allow_hosts=allow_hosts,
        refusal=refusal,
        stdio=StdioJail(
            jail.bwrap, tuple(jail.common), tuple(settings.mcp_stdio_commands), settings.agent_nice
        )
        if jail is not None
        else None,
    )


def _operation_id(route: APIRoute) -> str:
    """Short operation ids (`workspace_upload_file`): what generated clients name their
    methods and an agent its tools, within the 64 characters a tool name may have."""
    return f"{route.tags[0]}_{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, json_output=settings.is_production)
    app = FastAPI(
        title="Claude Multi-Agent Backend",
        version="0.1.0",
        description="Multi-tenant service that runs Claude agents for organisations.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    install_error_handlers(app)
    # Added first, so it runs inside RequestContextMiddleware and its refusals carry the id.
    app.add_middleware(
        RequestLimitsMiddleware,
        max_header_bytes=settings.max_request_header_bytes,
        max_body_bytes=settings.max_request_body_bytes,
    )
    app.add_middleware(RequestContextMiddleware)
    for module in (
        health,
        tenants,
        api_keys,
        models,
        conversations,
        execute,
        workspace,
        skills,
        secrets,
        mcp,
        usage,
    ):
        app.include_router(module.router)
    install_openapi(
        app,
        StreamRequest,
        StreamUpload,
        SkillCreate,
        SkillUpload,
        RemoteServerConfig,
        StdioServerConfig,
        BuiltinServerConfig,
        OpenApiServerConfig,
    )
    return app


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` for Uvicorn, built on first use: importing this module (as tests
    do, for `create_app`) reads no settings and configures nothing."""
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
