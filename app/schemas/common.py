"""Shapes shared by every resource: safe text, JSON objects, pagination, patches."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from app.utils.paths import MAX_PATH_CHARS, PATH_PATTERN

T = TypeVar("T")

MAX_JSON_OBJECT_BYTES = 64 * 1024
# What `${secrets.NAME}` and `${request.NAME}` may name: a secret, a request token.
PLACEHOLDER_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# An MCP server's name: its tools are `mcp__{name}__{tool}`.
MCP_NAME = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"
MAX_JSON_DEPTH = 16
MAX_DOCUMENT_DEPTH = 64


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text or jsonb, nor text that is not valid UTF-8
    # (a lone surrogate such as "\ud800" is accepted by JSON but encodes to nothing).
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode (no lone surrogates)") from exc
    return value


NO_NUL = r"^[^\x00]*$"


class _NoNul:
    """Refuses NUL (and text that is not valid Unicode); the document says so with a
    pattern where the string has none of its own (a pattern of its own excludes NUL).
    After any StringConstraints (`Annotated[str, StringConstraints(...), NoNul]`)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(_no_nul, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if json_schema.get("type") == "string":
            json_schema.setdefault("pattern", NO_NUL)
        return json_schema


NoNul = _NoNul()


class DocPattern:
    """The document shows this pattern for the string (a rule the service checks in code,
    e.g. a workspace path's); after NoNul in `Annotated[...]`."""

    def __init__(self, pattern: str, max_length: int) -> None:
        self.pattern, self.max_length = pattern, max_length

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), "pattern": self.pattern, "maxLength": self.max_length}


SafeStr = Annotated[str, NoNul]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), NoNul]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=255), NoNul]


def _check_json(value: Any, max_depth: int, depth: int = 0) -> None:
    if depth > max_depth:
        raise ValueError(f"must not nest deeper than {max_depth} levels")
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # What jsonb stores and orjson writes: 64-bit integers (floats in the same range).
        if not -(2**63) <= value < 2**64:
            raise ValueError("must hold numbers within the range of 64-bit integers")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _check_json(item, max_depth, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, max_depth, depth + 1)


def _json_bytes(value: dict[str, Any], max_depth: int) -> int:
    _check_json(value, max_depth)
    try:
        # NaN and Infinity parse as JSON here but are not JSON, and jsonb refuses them.
        return len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode())
    except ValueError as exc:
        raise ValueError("must not contain NaN or Infinity") from exc


def _valid_json_object(value: dict[str, Any]) -> dict[str, Any]:
    if _json_bytes(value, MAX_JSON_DEPTH) > MAX_JSON_OBJECT_BYTES:
        raise ValueError(f"must be at most {MAX_JSON_OBJECT_BYTES} bytes as JSON")
    return value


def _storable_document(value: dict[str, Any]) -> dict[str, Any]:
    _json_bytes(value, MAX_DOCUMENT_DEPTH)
    return value


def documented_as(component: str) -> WithJsonSchema:
    """Documented as `component`, a schema app.api.openapi adds to the document (pydantic
    cannot `$ref` a schema it did not make itself)."""
    return WithJsonSchema({COMPONENT_KEY: component})


COMPONENT_KEY = "x-component"
# No NUL, numbers in 64-bit range: see app.api.openapi.
_JSON_OBJECT_DOC = documented_as("JsonObject")
JsonObject = Annotated[dict[str, Any], AfterValidator(_valid_json_object), _JSON_OBJECT_DOC]
# A larger JSON object that PostgreSQL must be able to store (an OpenAPI document in a
# server's config): bounded by the request's size, nested up to 64 levels.
JsonDocument = Annotated[dict[str, Any], AfterValidator(_storable_document), _JSON_OBJECT_DOC]


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is out of range") from exc


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _rfc3339(value: object) -> object:
    """A date-time as RFC 3339 text with its offset: not a number (which would be taken as
    a Unix time), nor any other form."""
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-03-01T00:00:00Z")
    if isinstance(value, int | float):
        raise ValueError("must be an RFC 3339 date-time, not a number")
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_to_utc)]


# A workspace path as the API takes it (checked by app.utils.paths.workspace_path).
PathText = Annotated[str, DocPattern(PATH_PATTERN, MAX_PATH_CHARS)]


class DecimalText:
    """`Annotated[Decimal, DecimalText(...)]`: an amount of money as a decimal string
    ("12.50"): plain digits, at most `places` decimals, from 0 to `maximum`.
    Never a JSON number, which cannot carry an exact amount; the pattern the document
    shows is the one checked."""

    def __init__(self, *, places: int, maximum: int) -> None:
        whole = len(str(maximum)) - 1
        self.pattern = (
            f"^(?:[0-9]{{1,{whole}}}(?:\\.[0-9]{{1,{places}}})?|{maximum}(?:\\.0{{1,{places}}})?)$"
        )
        self.rule = f"a decimal string from 0 to {maximum} with at most {places} decimals"
        self._matches = re.compile(self.pattern).fullmatch  # `$` alone takes a last "\n"

    def _check(self, value: object) -> object:
        if isinstance(value, Decimal):  # the service's own values (defaults, stored rows)
            return value
        if not isinstance(value, str) or not self._matches(value):
            raise ValueError(f'must be {self.rule}, e.g. "12.5"')
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": self.pattern, "description": f"As {self.rule}"}


# Every field of an answer is always sent, defaults too: the document says they are
# required there (pydantic leaves out of `required` what has a default).
ANSWERS_IN_FULL = ConfigDict(json_schema_serialization_defaults_required=True)


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", **ANSWERS_IN_FULL)


class ReadSchema(BaseModel):
    model_config = ConfigDict(from_attributes=True, **ANSWERS_IN_FULL)


def drop_null(schema: dict[str, Any]) -> None:
    """`schema` (an `anyOf`) without its `null` branch; a branch left alone takes the
    `anyOf`'s place."""
    kept = [branch for branch in schema.pop("anyOf") if branch != {"type": "null"}]
    if len(kept) == 1:
        schema.update(kept[0])
    else:
        schema["anyOf"] = kept


def _only_nullable_fields_take_null(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """The document says what the validator does: `null` only for `nullable_fields`."""
    nullable: frozenset[str] = getattr(model, "nullable_fields", frozenset())
    for name, prop in schema.get("properties", {}).items():
        if name in nullable or "anyOf" not in prop:
            continue
        prop.pop("default", None)
        drop_null(prop)


class PatchSchema(Schema):
    """An update: only the fields sent change; `null` only where a field may be empty."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra=_only_nullable_fields_take_null, **ANSWERS_IN_FULL
    )
    nullable_fields: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _reject_nulls(self) -> PatchSchema:
        for name in self.model_fields_set:
            if getattr(self, name) is None and name not in self.nullable_fields:
                raise ValueError(f"'{name}' may not be null")
        return self

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class Page(BaseModel, Generic[T]):
    model_config = ANSWERS_IN_FULL

    items: list[T]
    total: int


class PageParams(BaseModel):
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=10_000_000)
