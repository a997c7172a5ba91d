"""The OpenAPI document: FastAPI's, made to tell the whole truth.

- The schemas of bodies that routes parse themselves (a body taken in more than one
  form) are added, so `$ref`s to them resolve.
- Every operation lists the errors any request can get, besides its own: 422 (routes
  that need a key refuse unknown query parameters), 401/403 where a key is needed, 404 where
  the path names something, 413 where there is a body, 431 (headers too large), 500
  and 503 (the database unreachable or this node's pool busy), all in the error envelope.
- A parameter that may be None is documented by its type alone (it is left out).
- A map whose keys must match a pattern says so with `propertyNames` (pydantic writes
  `patternProperties`, which lets any other key through).
- `JsonObject`: the free-form JSON the service stores (metadata, configs); `TimeZone`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.errors import ErrorEnvelope, status_description
from app.schemas.common import COMPONENT_KEY, NO_NUL, drop_null
from app.utils.zones import ZONES

REF_TEMPLATE = "#/components/schemas/{model}"
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head")
JSON_SCHEMAS: dict[str, dict[str, Any]] = {
    # Not a recursive schema, which generated clients cannot type (openapi-typescript's
    # TS2502, openapi-python-client's unions): the rules below the top are in words.
    "JsonObject": {
        "type": "object",
        "description": "Any JSON object: no NUL character in any string or key, at any depth;"
        " numbers within the range of 64-bit integers; nested at most 16 levels.",
        "propertyNames": {"pattern": NO_NUL},
        "additionalProperties": True,
    },
    "TimeZone": {
        "type": "string",
        "description": "An IANA time zone name",
        "enum": sorted(ZONES),
    },
}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _error(status: int) -> dict[str, Any]:
    return {
        "description": status_description(status),
        "content": {"application/json": {"schema": schema_ref(ErrorEnvelope)}},
    }


def _common_errors(path: str, operation: dict[str, Any]) -> list[int]:
    statuses = [422, 431, 500, 503]
    if operation.get("security"):
        statuses += [401, 403]
    if "{" in path:
        statuses.append(404)
    if "requestBody" in operation:
        statuses.append(413)
    return statuses


def _absent_is_none(schema: dict[str, Any]) -> None:
    """A parameter that may be None is sent by leaving it out: there is no null in a
    query string or a header (FastAPI documents `str | None` as string-or-null)."""
    if {"type": "null"} in schema.get("anyOf", ()):
        drop_null(schema)


def _rewrite(node: Any) -> None:
    """Keys only match a pattern: `propertyNames`; `x-component` markers: `$ref`s."""
    if isinstance(node, dict):
        component = node.pop(COMPONENT_KEY, None)
        if component is not None:
            node["$ref"] = REF_TEMPLATE.format(model=component)
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "properties" not in node:
            ((pattern, values),) = patterns.items()
            del node["patternProperties"]
            node["propertyNames"] = {"pattern": pattern}
            node["additionalProperties"] = values
        for value in node.values():
            _rewrite(value)
    elif isinstance(node, list):
        for value in node:
            _rewrite(value)


def complete(document: dict[str, Any], *models: type[BaseModel]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    every: list[type[BaseModel]] = [ErrorEnvelope, *models]
    _, definitions = models_json_schema(
        [(model, "validation") for model in every], ref_template=REF_TEMPLATE
    )
    for name, schema in {**definitions.get("$defs", {}), **JSON_SCHEMAS}.items():
        schemas.setdefault(name, schema)
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            for parameter in operation.get("parameters", []):
                _absent_is_none(parameter["schema"])
            responses = operation.setdefault("responses", {})
            for status in _common_errors(path, operation):
                responses.setdefault(str(status), _error(status))
    _rewrite(document)
    return document


def install_openapi(app: FastAPI, *models: type[BaseModel]) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate(), *models)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
