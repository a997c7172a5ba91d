"""The service's exception tree and the handlers that write the error envelope.

Every error leaves the service as
`{"error": {"code", "message", "details", "request_id"}}`.
Services raise `AppError` subclasses; nothing raises `HTTPException`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas.common import ANSWERS_IN_FULL
from app.utils.request_context import current_request_id

log = structlog.get_logger(__name__)


class AppError(Exception):
    """Base of every error the API reports on purpose."""

    status_code: int = 400
    code: str = "BAD_REQUEST"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or []
        self.headers = headers


class UnauthorizedError(AppError):
    status_code = 401
    code = "UNAUTHORIZED"

    def __init__(self, message: str = "A valid API key is required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(AppError):
    status_code = 403
    code = "FORBIDDEN"


class TenantInactiveError(ForbiddenError):
    code = "TENANT_INACTIVE"

    def __init__(self) -> None:
        super().__init__("This tenant is inactive")


class NotFoundError(AppError):
    status_code = 404
    code = "NOT_FOUND"

    def __init__(self, resource: str, identifier: object) -> None:
        super().__init__(f"{resource} '{identifier}' not found")


class ConflictError(AppError):
    status_code = 409
    code = "CONFLICT"


class UnprocessableError(AppError):
    status_code = 422
    code = "VALIDATION_ERROR"


class PayloadTooLargeError(AppError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class TooManyRequestsError(AppError):
    status_code = 429
    code = "TOO_MANY_REQUESTS"


class ServiceUnavailableError(AppError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"


class ErrorBody(BaseModel):
    model_config = ANSWERS_IN_FULL

    code: str
    message: str
    details: list[dict[str, Any]] = []
    request_id: str | None = None


class ErrorEnvelope(BaseModel):
    """The body of every error response."""

    error: ErrorBody


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = current_request_id()
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": jsonable_encoder(details or []),
            "request_id": request_id,
        }
    }
    return JSONResponse(body, status_code=status_code, headers=headers)


_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "TOO_MANY_REQUESTS",
    431: "REQUEST_HEADER_FIELDS_TOO_LARGE",
    503: "SERVICE_UNAVAILABLE",
}


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]
    return error_response(422, "VALIDATION_ERROR", "The request is not valid", details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI reads a JSON body before it validates it: bytes that are not UTF-8 are a
        # body that cannot be processed, like any other that does not parse.
        return error_response(422, "VALIDATION_ERROR", "The body is not valid UTF-8 JSON")
    if exc.status_code == 405:
        # Every method the path takes: each method of a path is a route of its own, and
        # the router names only the first route's.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in _every_route(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _every_route(routes: Iterable[Any]) -> Iterator[Any]:
    """The app's routes, those of included routers too (FastAPI keeps those nested)."""
    for route in routes:
        nested = getattr(route, "effective_candidates", None)
        if callable(nested):
            yield from _every_route(nested())
        else:
            yield route


async def _backend_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.error("backend_unavailable", error_type=type(exc).__name__)
    return error_response(503, "SERVICE_UNAVAILABLE", "The database is not reachable; try again")


async def _pool_busy(_: Request, exc: Exception) -> JSONResponse:
    # Every connection of this node's pool is in use: the database is fine, this node is
    # busy (a bigger pool would only turn this into latency).
    log.warning("database_pool_busy")
    return error_response(
        503,
        "SERVICE_BUSY",
        "The service is busy; try again shortly",
        headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
    )


BUSY_RETRY_AFTER_SECONDS = 2


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Connection-level database failures; anything else unexpected is a 500 written
    # by RequestContextMiddleware.
    for exc_type in (ConnectionError, OperationalError, InterfaceError):
        app.add_exception_handler(exc_type, _backend_unavailable)
    app.add_exception_handler(PoolTimeoutError, _pool_busy)


def status_description(status: int) -> str:
    return HTTPStatus(status).phrase


def error_responses(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the errors an endpoint can answer."""
    return {
        status: {"model": ErrorEnvelope, "description": status_description(status)}
        for status in status_codes
    }
