"""The route class of every router: what FastAPI's own does, plus two rules it does not
keep. A query parameter the operation does not take is a 422 on every route that needs a
key (a typo such as `?limt=5` would otherwise be silently ignored and answer something
else than what was asked; health checks and metrics scrapes may add what they like). A
body that cannot be read is answered only after the key is checked: FastAPI reads the
body before it solves any dependency, so a caller with no key would otherwise learn
about the body (422) instead of being told it is not authenticated (401)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import check_authenticated, get_principal

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def path_convertor(name: str, regex: str) -> None:
    """A path parameter type (`{param:name}`) matching `regex`: so that a route whose
    parameter would also match a sibling route's literal segment (`/mcp-servers/builtin`)
    does not take it, and a method only the literal route has answers 405, not 422."""
    convertor = type(f"{name}_convertor", (StringConvertor,), {"regex": regex})
    register_url_convertor(name, convertor())


def _walk(dependant: Dependant) -> list[Dependant]:
    found, stack = [], [dependant]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(current.dependencies)
    return found


def _query_names(dependants: list[Dependant]) -> frozenset[str]:
    names: set[str] = set()
    for dependant in dependants:
        for field in dependant.query_params:
            model = field.field_info.annotation
            if isinstance(model, type) and issubclass(model, BaseModel):
                names |= {f.alias or name for name, f in model.model_fields.items()}
            else:
                names.add(field.alias)
    return frozenset(names)


def _unread_body(exc: Exception) -> bool:
    """The error FastAPI raises when the body cannot be parsed at all, before any
    dependency ran: JSON that does not decode (loc `body, <position>`), bytes that are
    not UTF-8, a form that cannot be read (400)."""
    if isinstance(exc, RequestValidationError):
        return any(
            e.get("type") == "json_invalid" and len(e.get("loc", ())) == 2 for e in exc.errors()
        )
    return isinstance(exc, StarletteHTTPException) and exc.status_code == 400


class ServiceRoute(APIRoute):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        dependants = _walk(self.dependant)
        self.query_names = _query_names(dependants)
        self.authenticated = any(d.call is get_principal for d in dependants)

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            unknown = [name for name in request.query_params if name not in self.query_names]
            if unknown and self.authenticated:  # not health checks and metrics scrapes
                await check_authenticated(request)  # the key first, as for a bad body
                raise RequestValidationError(
                    [
                        {
                            "type": "extra_forbidden",
                            "loc": ("query", name),
                            "msg": "Unknown query parameter",
                        }
                        for name in unknown
                    ]
                )
            try:
                return await handler(request)
            except (RequestValidationError, StarletteHTTPException) as exc:
                if self.authenticated and _unread_body(exc):
                    await check_authenticated(request)
                raise

        return route_handler
