"""Tenant secrets and MCP servers as the API takes and shows them."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from app.schemas.common import (
    MCP_NAME,
    PLACEHOLDER_NAME,
    JsonDocument,
    NoNul,
    ReadSchema,
    SafeStr,
    Schema,
)


class SecretWrite(Schema):
    value: Annotated[str, StringConstraints(min_length=1, max_length=64 * 1024), NoNul] = Field(
        description="Write-only: never shown again, in any response, log or event"
    )


class SecretRead(ReadSchema):
    name: str
    created_at: datetime
    updated_at: datetime


# An http(s) URL (with no NUL in it, which the service refuses in any string).
HTTP_URL = r"^https?://[^\x00]*$"
McpName = Annotated[str, StringConstraints(pattern=MCP_NAME)]
McpType = Literal["http", "sse", "stdio", "builtin", "openapi"]
McpStatus = Literal["active", "disabled"]
ToolPattern = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")]
HeaderValue = Annotated[str, StringConstraints(max_length=8192, pattern=r"^[^\r\n\x00]*$"), NoNul]


class RemoteServerConfig(Schema):
    """`http` (streamable HTTP) and `sse`: where the server is and what to send it."""

    url: Annotated[str, StringConstraints(max_length=2048, pattern=HTTP_URL), NoNul]
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=50)


class BasicAuthConfig(Schema):
    username: HeaderValue
    password: HeaderValue


class OpenApiFilter(Schema):
    """Operations to leave out: those with one of these methods, a path matching this
    regular expression, and one of these tags (each given part must match)."""

    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]] | None = None
    path: Annotated[str, StringConstraints(max_length=500)] | None = None
    tags: list[Annotated[str, StringConstraints(max_length=200)]] | None = None


class OpenApiServerConfig(Schema):
    """`openapi`: a REST API, one tool per operation (named by its operationId)."""

    spec: dict[str, Any] | Annotated[str, StringConstraints(max_length=5 * 1024 * 1024)] | None = (
        Field(default=None, description="The document: a JSON object, or JSON or YAML text")
    )
    spec_url: Annotated[str, StringConstraints(max_length=2048, pattern=HTTP_URL), NoNul] | None = (
        Field(default=None, description="Where to fetch the document (through the guard)")
    )
    base_url: Annotated[str, StringConstraints(max_length=2048, pattern=HTTP_URL), NoNul]
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=50)
    query: dict[Annotated[str, StringConstraints(max_length=100)], HeaderValue] = Field(
        default_factory=dict, max_length=20, description="e.g. an API key sent in the query"
    )
    basic: BasicAuthConfig | None = None
    exclude: list[OpenApiFilter] = Field(default_factory=list, max_length=50)


# Variables the dynamic loader and libc read before bwrap has jailed anything: a tenant
# may not set them for a STDIO server (bwrap itself starts with the server's environment).
_LOADER_VARIABLES = re.compile(
    r"^(LD_.*|GCONV_PATH|GLIBC_TUNABLES|MALLOC_.*|LOCPATH|NLSPATH|HOSTALIASES|RES_OPTIONS"
    r"|LOCALDOMAIN|TZDIR|PATH|HOME|TMPDIR)$",
    re.IGNORECASE,
)


def _settable(name: str) -> str:
    if _LOADER_VARIABLES.match(name):
        raise ValueError(f"{name} cannot be set for a STDIO server")
    return name


StdioVariable = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"),
    AfterValidator(_settable),
]


class StdioServerConfig(Schema):
    """`stdio`: a command from the operator's list, its arguments, its environment
    (placeholders allowed there)."""

    command: Annotated[str, StringConstraints(max_length=1024), NoNul]
    args: list[Annotated[str, StringConstraints(max_length=1024), NoNul]] = Field(
        default_factory=list, max_length=100
    )
    env: dict[StdioVariable, HeaderValue] = Field(default_factory=dict, max_length=50)


class BuiltinServerConfig(Schema):
    name: Literal["workspace", "web"]


# The config each type of server takes: the service validates with it, and the document
# says so.
CONFIG_BY_TYPE: dict[str, type[Schema]] = {
    "http": RemoteServerConfig,
    "sse": RemoteServerConfig,
    "stdio": StdioServerConfig,
    "builtin": BuiltinServerConfig,
    "openapi": OpenApiServerConfig,
}


def _config_by_type(schema: dict[str, Any]) -> None:
    types_of: dict[type[Schema], list[str]] = {}
    for server_type, model in CONFIG_BY_TYPE.items():
        types_of.setdefault(model, []).append(server_type)
    schema["oneOf"] = [
        {
            "properties": {
                "type": {"enum": types},
                "config": {"$ref": f"#/components/schemas/{model.__name__}"},
            }
        }
        for model, types in types_of.items()
    ]


class McpServerWrite(Schema):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_config_by_type)

    name: McpName = Field(description="Its tools are `mcp__{name}__{tool}`")
    type: McpType
    config: JsonDocument = Field(
        description="By type: http/sse `{url, headers}` (placeholders allowed in headers and "
        "the URL's query); builtin `{name}`"
    )
    allowed_tools: list[ToolPattern] | None = Field(
        default=None, max_length=200, description="Tool names or globs; others are hidden"
    )
    description: Annotated[str, StringConstraints(max_length=2000), NoNul] | None = Field(
        default=None, description="Added to the agent's system prompt"
    )
    status: McpStatus = "active"
    timeout_seconds: float = Field(default=30.0, ge=1, le=300)


class McpServerRead(ReadSchema):
    server_id: uuid.UUID
    name: str
    type: McpType
    config: dict[str, Any]
    allowed_tools: list[str] | None
    description: str | None
    status: McpStatus
    timeout_seconds: float
    created_at: datetime
    updated_at: datetime


class McpTestRequest(Schema):
    tokens: dict[Annotated[str, StringConstraints(pattern=PLACEHOLDER_NAME)], SafeStr] = Field(
        default_factory=dict, max_length=50, description="Values for `${request.NAME}`"
    )


class McpToolRead(Schema):
    name: str
    description: str | None
    input_schema: dict[str, Any]


class BuiltinServerRead(Schema):
    name: str
    description: str
    tools: list[str]
