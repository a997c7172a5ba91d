"""Request bodies a route takes in more than one form (JSON, multipart, a raw archive) and
so reads itself: errors in the same 422 envelope as FastAPI's own, spooled files closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import get_settings
from app.errors import UnprocessableError

M = TypeVar("M", bound=BaseModel)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def invalid(exc: ValidationError, *loc: str | int) -> RequestValidationError:
    """A pydantic error as FastAPI reports a body's, under `loc`."""
    errors = exc.errors(include_url=False)
    return RequestValidationError([{**e, "loc": (*loc, *e["loc"])} for e in errors])


def parse_json(model: type[M], data: bytes | str, *loc: str | int) -> M:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise invalid(exc, *loc) from exc


@asynccontextmanager
async def read_form(
    request: Request, *, max_files: int, max_fields: int
) -> AsyncIterator[FormData]:
    """The multipart form (a field may be as large as a whole body); its files are closed
    on leaving. A form that cannot be read is a 422."""
    try:
        form = await request.form(
            max_files=max_files,
            max_fields=max_fields,
            max_part_size=get_settings(request).max_request_body_bytes,
        )
    except StarletteHTTPException as exc:
        if exc.status_code != 400:
            raise
        raise UnprocessableError(f"The multipart body cannot be read: {exc.detail}") from exc
    try:
        yield form
    finally:
        await form.close()


def form_files(form: FormData, name: str) -> list[UploadFile]:
    values = form.getlist(name)
    files = [v for v in values if isinstance(v, UploadFile)]
    if len(files) != len(values):
        raise UnprocessableError(f"`{name}` must be files")
    return files


def form_texts(form: FormData, name: str) -> list[str]:
    values = form.getlist(name)
    texts = [v for v in values if isinstance(v, str)]
    if len(texts) != len(values):
        raise UnprocessableError(f"`{name}` must be text")
    return texts
