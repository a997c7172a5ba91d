"""What operators watch, in Prometheus' text format at /metrics. Counters are this node's
own (Prometheus tells nodes apart by the scraped instance); gauges are read when
scraped, and `cmab_cluster_*` ones count every node's runs from the database."""

from __future__ import annotations

import psutil
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Node, Run
from app.models.run import ACTIVE_RUN_STATUSES

RUNS_ENDED = Counter(
    "cmab_runs_ended_total", "Runs that ended on this node", ["status", "error_type"]
)
QUEUE_WAIT = Histogram(
    "cmab_run_queue_wait_seconds",
    "From a run's request to its slot",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
EVENTS = Counter("cmab_run_events_total", "Run events this node emitted (rate: events/s)")
TOKEN_KINDS = ("input", "output", "cache_creation_5m", "cache_creation_1h", "cache_read")
TOKENS = Counter("cmab_tokens_total", "Tokens of runs that ended on this node", ["model", "kind"])
COST = Counter("cmab_cost_usd_total", "Cost of runs that ended on this node, USD", ["model"])
NODE_INFO = Gauge("cmab_node_info", "This node: its id and roles", ["node_id", "roles"])
RUNNING = Gauge("cmab_runs_running", "Runs holding a slot on this node")
WAITING = Gauge("cmab_runs_waiting", "Runs this node took that wait for a slot")
WARM = Gauge("cmab_warm_sessions", "Warm agent sessions this node holds")
FOLLOWERS = Gauge("cmab_stream_followers", "Event streams this node is serving")
AGENTS = Gauge("cmab_agent_processes", "Agent (CLI) processes under this node")
AGENT_MEMORY = Gauge("cmab_agent_memory_bytes", "Resident memory of every process under this node")
CLUSTER_RUNS = Gauge("cmab_cluster_runs", "Runs queued or running on every node", ["status"])
CLUSTER_NODES = Gauge("cmab_cluster_nodes", "Nodes with a heartbeat", ["role"])


def sample_processes() -> None:
    """The agent processes under this one (the CLI is `claude`), and what all of this
    node's child processes hold in memory."""
    agents, memory = 0, 0
    for child in psutil.Process().children(recursive=True):
        try:
            memory += child.memory_info().rss
            agents += child.name() == "claude"
        except psutil.Error:  # gone meanwhile
            continue
    AGENTS.set(agents)
    AGENT_MEMORY.set(memory)


async def sample_cluster(session: AsyncSession) -> None:
    rows = await session.execute(
        select(Run.status, func.count())
        .where(Run.status.in_(ACTIVE_RUN_STATUSES))
        .group_by(Run.status)
    )
    counts = {status: count for status, count in rows.all()}
    for status in ACTIVE_RUN_STATUSES:
        CLUSTER_RUNS.labels(status).set(counts.get(status, 0))
    nodes = list(await session.scalars(select(Node.roles)))
    for role in ("api", "worker"):
        CLUSTER_NODES.labels(role).set(sum(role in roles for roles in nodes))
