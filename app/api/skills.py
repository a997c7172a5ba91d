"""Routes of a tenant's Agent Skills: upload (JSON files map, zip, or multipart), read,
new versions, metadata, delete, files, versions, and the slash-command menu."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import FormData

from app.api.bodies import form_files, form_texts, invalid, media_type, parse_json, read_form
from app.api.deps import (
    CurrentPrincipal,
    CurrentScope,
    DbSession,
    HeaderUserId,
    Pagination,
    get_store,
    retire_warm_sessions,
)
from app.api.openapi import schema_ref
from app.api.routing import ServiceRoute
from app.errors import AppError, NotFoundError, UnprocessableError, error_responses
from app.models import Skill, SkillVersion
from app.schemas.common import Page
from app.schemas.skills import (
    Base64File,
    SkillCreate,
    SkillDetail,
    SkillFileRead,
    SkillMetaIn,
    SkillRead,
    SkillStatus,
    SkillUpload,
    SkillVersionRead,
    SlashCommandRead,
)
from app.services import skills as service
from app.services.scope import TenantScope
from app.services.skill_files import SkillFolder, SkillLimits, check_folder, read_zip
from app.services.workspace import mime_type_of, remove_stored

router = APIRouter(route_class=ServiceRoute, prefix="/api/tenants/{tenant_id}", tags=["skills"])

SkillName = Annotated[str, Path(max_length=64, description="The skill's name")]
ZIP_TYPES = ("application/zip", "application/x-zip-compressed")
_ONE = error_responses(401, 403, 404, 422)
_WRITE = error_responses(401, 403, 404, 409, 413, 415, 422)
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": schema_ref(SkillCreate)},
            "application/zip": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "The zip of the skill folder",
                }
            },
            "multipart/form-data": {"schema": schema_ref(SkillUpload)},
        },
    }
}


class UnsupportedMediaTypeError(AppError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


@dataclass(frozen=True)
class SkillBody:
    folder: SkillFolder
    meta: service.SkillMeta


def _limits(request: Request) -> SkillLimits:
    settings = request.app.state.settings
    return SkillLimits(settings.skill_max_files, settings.skill_max_bytes)


def _meta(meta: SkillMetaIn) -> service.SkillMeta:
    return service.SkillMeta(**meta.model_dump(include=set(SkillMetaIn.model_fields)))


def _decoded(path: str, content: str | Base64File) -> bytes:
    if isinstance(content, str):
        return content.encode()
    try:
        return base64.b64decode(content.base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UnprocessableError(f"{path}: the base64 content cannot be decoded") from exc


async def _skill_body(request: Request) -> AsyncIterator[SkillBody]:
    """A skill folder in any of its three forms, checked before anything is stored."""
    kind, limits = media_type(request), _limits(request)
    if kind in ZIP_TYPES:
        data = await request.body()
        yield SkillBody(await asyncio.to_thread(read_zip, data, limits), service.SkillMeta())
    elif kind == "multipart/form-data":
        async with read_form(
            request, max_files=limits.max_files + 1, max_fields=limits.max_files + 10
        ) as form:
            fields = {key: form.get(key) for key in SkillMetaIn.model_fields if key in form}
            try:
                meta = SkillMetaIn.model_validate(fields)
            except ValidationError as exc:
                raise invalid(exc, "body") from exc
            yield SkillBody(await _form_folder(form, limits), _meta(meta))
    elif kind in ("application/json", ""):
        body = parse_json(SkillCreate, await request.body(), "body")
        files = {path: _decoded(path, content) for path, content in body.files.items()}
        yield SkillBody(await asyncio.to_thread(check_folder, files, limits), _meta(body))
    else:
        raise UnsupportedMediaTypeError(
            "Send the skill as application/json, application/zip or multipart/form-data"
        )


_WriteBody = Annotated[SkillBody, Depends(_skill_body, scope="function")]


async def _form_folder(form: FormData, limits: SkillLimits) -> SkillFolder:
    """The folder of a multipart upload: one `archive` (a zip), or `files` named by
    `paths` (else by their file names)."""
    archives = form_files(form, "archive")
    files, paths = form_files(form, "files"), form_texts(form, "paths")
    if archives:
        if len(archives) > 1 or files:
            raise UnprocessableError("Send one `archive`, or `files`, not both")
        return await asyncio.to_thread(read_zip, await archives[0].read(), limits)
    if not files:
        raise UnprocessableError("Send the skill's `files` (or its zip as `archive`)")
    if paths and len(paths) != len(files):
        raise UnprocessableError("Give one path for each file, or none")
    names = paths or [f.filename or "" for f in files]
    contents: dict[str, bytes] = {}
    for name, upload in zip(names, files, strict=True):
        if name in contents:
            raise UnprocessableError(f"{name}: each path appears once", code="INVALID_SKILL")
        contents[name] = await upload.read()
    return await asyncio.to_thread(check_folder, contents, limits)


def _author(principal: CurrentPrincipal, user_id: str | None) -> str:
    if user_id is not None:
        return user_id
    return "admin" if principal.is_admin else f"key:{principal.key_id}"


def _files(version: SkillVersion) -> list[SkillFileRead]:
    return [SkillFileRead.model_validate(entry) for entry in version.manifest]


async def _detail(session: DbSession, scope: TenantScope, skill: Skill) -> SkillDetail:
    version = await service.get_version(session, scope, skill)
    return SkillDetail(
        **SkillRead.model_validate(skill).model_dump(),
        frontmatter=version.frontmatter,
        files=_files(version),
    )


@router.post(
    "/skills",
    response_model=SkillDetail,
    status_code=status.HTTP_201_CREATED,
    responses=_WRITE,
    openapi_extra=_BODY,
)
async def create_skill(
    request: Request,
    principal: CurrentPrincipal,
    scope: CurrentScope,
    session: DbSession,
    user_id: HeaderUserId,
    body: _WriteBody,
) -> SkillDetail:
    """A new skill (version 1) from a JSON files map, a zip of its folder, or multipart
    files; 409 `SKILL_EXISTS` if the tenant has one of that name."""
    skill = await service.create_skill(
        session, get_store(request), scope, body.folder, body.meta, _author(principal, user_id)
    )
    retire_warm_sessions(request, scope.tenant_id)
    return await _detail(session, scope, skill)


@router.get("/skills", response_model=Page[SkillRead], responses=_ONE)
async def list_skills(
    scope: CurrentScope,
    session: DbSession,
    page: Pagination,
    status: Annotated[SkillStatus | None, Query(description="Only skills in this status")] = None,
) -> Page[SkillRead]:
    rows, total = await service.list_skills(
        session, scope, status=status, limit=page.limit, offset=page.offset
    )
    return Page(items=[SkillRead.model_validate(r) for r in rows], total=total)


@router.get("/skills/{name}", response_model=SkillDetail, responses=_ONE)
async def get_skill(scope: CurrentScope, session: DbSession, name: SkillName) -> SkillDetail:
    return await _detail(session, scope, await service.get_skill(session, scope, name))


@router.put("/skills/{name}", response_model=SkillDetail, responses=_WRITE, openapi_extra=_BODY)
async def update_skill(
    request: Request,
    principal: CurrentPrincipal,
    scope: CurrentScope,
    session: DbSession,
    user_id: HeaderUserId,
    name: SkillName,
    body: _WriteBody,
) -> SkillDetail:
    """A new version of the skill (in any of the three forms); no new version when its
    files are unchanged. Runs that started before keep the version they had."""
    skill = await service.update_skill(
        session,
        get_store(request),
        scope,
        name,
        body.folder,
        body.meta,
        _author(principal, user_id),
    )
    retire_warm_sessions(request, scope.tenant_id)
    return await _detail(session, scope, skill)


@router.patch(
    "/skills/{name}", response_model=SkillDetail, responses=error_responses(401, 403, 404, 409, 422)
)
async def patch_skill(
    request: Request, scope: CurrentScope, session: DbSession, name: SkillName, body: SkillMetaIn
) -> SkillDetail:
    """Metadata and status: title, slash command and its description, whether users may
    pick it, active or disabled."""
    skill = await service.patch_skill(session, scope, name, _meta(body))
    retire_warm_sessions(request, scope.tenant_id)
    return await _detail(session, scope, skill)


@router.delete(
    "/skills/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_ONE,
)
async def delete_skill(
    request: Request, scope: CurrentScope, session: DbSession, name: SkillName
) -> Response:
    """The skill, its versions and its files go; runs keep saying which version they had."""
    prefix = await service.delete_skill(session, scope, name)
    await session.commit()
    retire_warm_sessions(request, scope.tenant_id)
    request.app.state.background.spawn(
        remove_stored(get_store(request), prefix=prefix), name=f"delete-skill-{name}"
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/skills/{name}/versions", response_model=Page[SkillVersionRead], responses=_ONE)
async def list_versions(
    scope: CurrentScope, session: DbSession, name: SkillName, page: Pagination
) -> Page[SkillVersionRead]:
    rows, total = await service.versions(session, scope, name, limit=page.limit, offset=page.offset)
    items = [
        SkillVersionRead(
            version=r.version, files=_files(r), created_by=r.created_by, created_at=r.created_at
        )
        for r in rows
    ]
    return Page(items=items, total=total)


@router.get(
    "/skills/{name}/files/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, **_ONE},
)
async def download_skill_file(
    request: Request,
    scope: CurrentScope,
    session: DbSession,
    name: SkillName,
    path: Annotated[str, Path(max_length=1024)],
    version: Annotated[int | None, Query(ge=1, le=1_000_000_000)] = None,
) -> StreamingResponse:
    """One file of the skill's current version (or of version N)."""
    skill = await service.get_skill(session, scope, name)
    row = await service.get_version(session, scope, skill, version)
    entry = next((f for f in row.manifest if f["path"] == path), None)
    if entry is None:
        raise NotFoundError("Skill file", path)
    key = service.blob_key(scope.tenant_id, skill.skill_id, entry["sha256"])
    filename = quote(path.rsplit("/", 1)[-1])
    return StreamingResponse(
        get_store(request).stream(key, start=0, end=entry["size"]),
        media_type=mime_type_of(path),
        headers={
            "ETag": f'"{entry["sha256"]}"',
            "Content-Length": str(entry["size"]),
            "Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
        },
    )


@router.get("/slash-commands", response_model=list[SlashCommandRead], responses=_ONE)
async def list_slash_commands(scope: CurrentScope, session: DbSession) -> list[SlashCommandRead]:
    """The active skills users may pick, with the command to type: a command menu."""
    skills = await service.slash_commands(session, scope)
    versions = await service.current_frontmatters(session, skills)
    return [
        SlashCommandRead(
            command=s.slash_command,
            skill=s.name,
            title=s.title,
            description=s.slash_command_description or s.description,
            argument_hint=versions.get(s.skill_id, {}).get("argument-hint"),
        )
        for s in skills
    ]
