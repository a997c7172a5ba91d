"""Routes of a conversation's workspace files: upload, list, download (any version, with
ranges), history, delete."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Annotated
from urllib.parse import quote

import starlette.datastructures
from fastapi import (
    APIRouter,
    File,
    Form,
    Header,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import CurrentScope, DbSession, HeaderUserId, Pagination, get_store
from app.api.routing import ServiceRoute, path_convertor
from app.errors import AppError, UnprocessableError, error_responses
from app.models import WorkspaceFile
from app.schemas.common import Page, PathText
from app.schemas.workspace import WorkspaceFileRead, WorkspaceFileVersionRead
from app.services import workspace as service
from app.services.conversations import get_conversation
from app.services.scope import TenantScope
from app.utils.paths import PATH_RULES, BadPathError, workspace_path

router = APIRouter(
    route_class=ServiceRoute,
    prefix="/api/tenants/{tenant_id}/conversations/{conversation_id}/files",
    tags=["workspace"],
)

ConversationPath = Annotated[uuid.UUID, Path(description="The conversation's UUID")]
FilePath = Annotated[PathText, Path(description=PATH_RULES)]
# The paths of the files themselves (read, write, delete) leave out those that name the
# routes beside them: `presented` (the list of presented files) and `…/versions` (a
# file's history). No upload may take such a path; a file the agent names so shows in
# the listings.
_LISTS = "presented|.*/versions"
_NAMES_A_LIST = re.compile(_LISTS)
path_convertor("file", f"(?!(?:{_LISTS})$).+")
_ONE = error_responses(401, 403, 404, 422)


class RangeNotSatisfiableError(AppError):
    status_code = 416
    code = "RANGE_NOT_SATISFIABLE"


def _path(raw: str, *, upload: bool = False) -> str:
    try:
        path = workspace_path(raw)
    except BadPathError as exc:
        raise UnprocessableError(f"Bad file path: {exc}", code="BAD_PATH") from exc
    if upload and _NAMES_A_LIST.fullmatch(path):
        raise UnprocessableError(
            "Bad file path: `presented` and `…/versions` name lists of the API, not files",
            code="BAD_PATH",
        )
    return path


def _read(file: WorkspaceFile) -> WorkspaceFileRead:
    return WorkspaceFileRead(
        path=file.path,
        version=file.current_version,
        size=file.size,
        sha256=file.sha256,
        mime_type=file.mime_type,
        presented=file.presented,
        created_at=file.created_at,
        updated_at=file.updated_at,
    )


@router.get("", response_model=Page[WorkspaceFileRead], responses=_ONE)
async def list_files(
    scope: CurrentScope,
    session: DbSession,
    conversation_id: ConversationPath,
    page: Pagination,
    prefix: Annotated[str | None, Query(max_length=1024, description="Paths starting so")] = None,
    presented: Annotated[bool | None, Query(description="Only (not) presented files")] = None,
) -> Page[WorkspaceFileRead]:
    rows, total = await service.list_files(
        session,
        scope,
        conversation_id,
        prefix=prefix,
        presented=presented,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(items=[_read(r) for r in rows], total=total)


MAX_UPLOAD_FILES = 100


@router.post(
    "",
    response_model=list[WorkspaceFileRead],
    status_code=status.HTTP_201_CREATED,
    responses={**_ONE, **error_responses(413)},
)
async def upload_files(
    request: Request,
    scope: CurrentScope,
    session: DbSession,
    user_id: HeaderUserId,
    conversation_id: ConversationPath,
    files: Annotated[list[UploadFile], File(description="The files", min_length=1)],
    paths: Annotated[
        list[PathText] | None,
        Form(description="A path for each file, in order; else each file's own name"),
    ] = None,
) -> list[WorkspaceFileRead]:
    """Several files at once (multipart), each a `user_upload` version; all or none."""
    return await save_uploads(request, session, scope, conversation_id, files, paths, user_id)


async def save_uploads(
    request: Request,
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    files: Sequence[starlette.datastructures.UploadFile],
    paths: list[str] | None,
    user_id: str | None,
) -> list[WorkspaceFileRead]:
    """Uploaded files (named by `paths`, else by their own names) as `user_upload`
    versions, in the caller's transaction: 422 for a bad path, 413 past a cap or the
    quota, 404 for another tenant's conversation."""
    if len(files) > MAX_UPLOAD_FILES:
        raise UnprocessableError(f"At most {MAX_UPLOAD_FILES} files at once")
    if paths is not None and len(paths) != len(files):
        raise UnprocessableError("Give one path for each file, or none")
    names = paths if paths is not None else [f.filename or "" for f in files]
    relatives = [_path(name, upload=True) for name in names]
    if len(set(relatives)) != len(relatives):
        raise UnprocessableError("Each file needs a path of its own")
    await get_conversation(session, scope, conversation_id)
    limits = await service.tenant_limits(session, scope.tenant_id, request.app.state.file_caps)
    written = []
    for upload, relative in zip(files, relatives, strict=True):
        change = await service.write_file(
            session,
            get_store(request),
            scope,
            conversation_id,
            relative,
            await upload.read(),
            limits=limits,
            source="user_upload",
            user_id=user_id,
        )
        written.append(_read(change.file))
    return written


@router.get("/presented", response_model=Page[WorkspaceFileRead], responses=_ONE)
async def list_presented_files(
    scope: CurrentScope, session: DbSession, conversation_id: ConversationPath, page: Pagination
) -> Page[WorkspaceFileRead]:
    """The files the agent presented to the user. (This path shadows a top-level file
    named `presented`, whose history stays at `files/presented/versions`.)"""
    return await list_files(scope, session, conversation_id, page, presented=True)


@router.get(
    "/{path:path}/versions",
    response_model=Page[WorkspaceFileVersionRead],
    responses=_ONE,
)
async def list_versions(
    scope: CurrentScope,
    session: DbSession,
    conversation_id: ConversationPath,
    path: FilePath,
    page: Pagination,
) -> Page[WorkspaceFileVersionRead]:
    rows, total = await service.versions(
        session, scope, conversation_id, _path(path), limit=page.limit, offset=page.offset
    )
    return Page(items=[WorkspaceFileVersionRead.model_validate(r) for r in rows], total=total)


@router.put(
    "/{path:file}",
    response_model=WorkspaceFileRead,
    responses={**_ONE, **error_responses(413)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_file(
    request: Request,
    scope: CurrentScope,
    session: DbSession,
    user_id: HeaderUserId,
    conversation_id: ConversationPath,
    path: FilePath,
) -> WorkspaceFileRead:
    """The raw request body becomes the file's next version (source `user_upload`); an
    unchanged content makes no new version."""
    relative = _path(path)
    await get_conversation(session, scope, conversation_id)
    limits = await service.tenant_limits(session, scope.tenant_id, request.app.state.file_caps)
    data = await request.body()
    change = await service.write_file(
        session,
        get_store(request),
        scope,
        conversation_id,
        relative,
        data,
        limits=limits,
        source="user_upload",
        user_id=user_id,
    )
    return _read(change.file)


@router.get(
    "/{path:file}",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        206: {"description": "The part of the file the Range header asked for"},
        **_ONE,
        **error_responses(416),
    },
)
async def download_file(
    request: Request,
    scope: CurrentScope,
    session: DbSession,
    conversation_id: ConversationPath,
    path: FilePath,
    version: Annotated[int | None, Query(ge=1, le=1_000_000_000)] = None,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The file's content (or an earlier version's); `ETag` is its sha256; one byte range
    per request (`Range: bytes=start-end`)."""
    file, row = await service.file_version(session, scope, conversation_id, _path(path), version)
    assert row.sha256 is not None
    name = file.path.rsplit("/", 1)[-1]
    headers = {
        "ETag": f'"{row.sha256}"',
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
    }
    start, end, code = 0, row.size, status.HTTP_200_OK
    span = _range(range_header, row.size) if range_header else None
    if span is not None:
        start, end = span
        code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{row.size}"
    headers["Content-Length"] = str(end - start)
    key = service.blob_key(scope.tenant_id, conversation_id, row.sha256)
    body = get_store(request).stream(key, start=start, end=end)
    return StreamingResponse(body, status_code=code, media_type=file.mime_type, headers=headers)


_BYTE_RANGE = re.compile(r"^bytes=(?:(\d+)-(\d*)|-(\d+))$")


def _range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; None for a Range header that is not one
    (ignored, as RFC 9110 §14.2 has it: the whole file is sent); 416 if it cannot be
    served."""
    found = _BYTE_RANGE.match(header.strip())
    if found is None:
        return None
    first, last, suffix = found.groups()
    if suffix is not None:
        start, end = max(0, size - int(suffix)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= end or start >= size:
        raise RangeNotSatisfiableError(f"Range {header!r} is outside the file ({size} bytes)")
    return start, end


@router.delete(
    "/{path:file}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses=_ONE
)
async def delete_file(
    scope: CurrentScope,
    session: DbSession,
    user_id: HeaderUserId,
    conversation_id: ConversationPath,
    path: FilePath,
) -> Response:
    """A tombstone version (`user_deleted`): the file leaves the workspace, its history
    stays."""
    await get_conversation(session, scope, conversation_id)
    await service.delete_file(session, scope, conversation_id, _path(path), user_id=user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
