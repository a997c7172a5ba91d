"""Request and response bodies of agent runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, StringConstraints, computed_field

from app.schemas.common import (
    MCP_NAME,
    PLACEHOLDER_NAME,
    DecimalText,
    Name,
    NoNul,
    PathText,
    ReadSchema,
    Schema,
    UserId,
)

UserInput = Annotated[str, StringConstraints(min_length=1, max_length=1_000_000), NoNul]
Usd = Annotated[
    Decimal, PlainSerializer(lambda v: str(v.quantize(Decimal("0.000001"))), return_type=str)
]


class Executor(Schema):
    """Who asked for the run, as the tenant's front end knows them."""

    user_id: UserId | None = None
    name: Name | None = None
    email: Annotated[str, StringConstraints(max_length=320), NoNul] | None = None


class StreamRequest(Schema):
    user_input: UserInput
    executor: Executor | None = None
    preferred_skills: list[
        Annotated[str, StringConstraints(min_length=1, max_length=200), NoNul]
    ] = Field(default_factory=list, max_length=50)
    max_cost_usd: Annotated[Decimal, DecimalText(places=6, maximum=1_000_000)] | None = Field(
        default=None,
        description="This run stops (error `budget_exceeded`) once it has cost this much",
    )
    mcp_servers: list[Annotated[str, StringConstraints(pattern=MCP_NAME)]] | None = Field(
        default=None,
        max_length=50,
        description="Only these of the tenant's MCP servers for this run (names); all by default",
    )
    tokens: dict[
        Annotated[str, StringConstraints(pattern=PLACEHOLDER_NAME)],
        Annotated[str, StringConstraints(max_length=10_000), NoNul],
    ] = Field(
        default_factory=dict,
        max_length=50,
        description="Request-scoped secrets; kept in memory for the run, never stored.",
    )


class StreamUpload(Schema):
    """The stream request as `multipart/form-data`, with files put into the conversation's
    workspace (as `user_upload` versions) before the run starts: all of them, and the run,
    or nothing."""

    request: StreamRequest = Field(
        description="The stream request, as a part of type application/json"
    )
    files: list[bytes] = Field(default_factory=list, description="Files for the workspace")
    paths: list[PathText] = Field(
        default_factory=list,
        description="A path for each file, in order; else each file's own name",
    )


class Usage(ReadSchema):
    input_tokens: int
    output_tokens: int
    cache_creation_5m_tokens: int
    cache_creation_1h_tokens: int
    cache_read_tokens: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_5m_tokens
            + self.cache_creation_1h_tokens
            + self.cache_read_tokens
        )


class RunRead(ReadSchema):
    run_id: uuid.UUID
    tenant_id: str
    conversation_id: uuid.UUID
    user_id: str | None
    model_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    node_id: str | None = Field(description="The service node that runs it")
    user_input: str
    executor: dict[str, Any] | None
    preferred_skills: list[str] | None
    command: str | None = Field(description="The skill a `/command` ran")
    skill_versions: dict[str, int] | None = Field(
        description="Every skill the run had, by name: the version it loaded"
    )
    session_id: str | None
    result: str | None
    error_type: str | None
    error: str | None
    num_turns: int
    duration_ms: int | None
    cost_usd: Usd
    usage: Usage
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def run_read(run: Any) -> RunRead:
    """A run row as its API shape, with its token counts gathered under `usage`."""
    fields = {name: getattr(run, name) for name in RunRead.model_fields if name != "usage"}
    return RunRead.model_validate({**fields, "usage": Usage.model_validate(run)})
