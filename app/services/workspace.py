"""A conversation's workspace files: every version kept, with where it came from; blobs in
the object store, content-addressed per tenant (an unchanged file is never stored twice)."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ConflictError, NotFoundError, PayloadTooLargeError
from app.models import Conversation, WorkspaceFile, WorkspaceFileVersion
from app.services.conversations import get_conversation
from app.services.integrity import flush_mapping_violations
from app.services.pagination import paginate
from app.services.scope import TenantScope
from app.services.storage import ObjectStore
from app.services.tenants import tenant_settings

log = structlog.get_logger(__name__)
DELETE_ATTEMPTS = 5


def conversation_prefix(tenant_id: str, conversation_id: uuid.UUID | str) -> str:
    return f"{tenant_id}/{conversation_id}/"


def blob_key(tenant_id: str, conversation_id: uuid.UUID | str, sha256: str) -> str:
    """Content-addressed within the conversation: a content is stored once however many
    versions have it, and deleting the conversation is deleting its prefix."""
    return f"{conversation_prefix(tenant_id, conversation_id)}blobs/{sha256[:2]}/{sha256}"


async def _bump(session: AsyncSession, conversation_id: uuid.UUID) -> None:
    """A file of the conversation has a new version: its files_version goes up. Writes
    that raced (the same new path twice, a conversation deleted meanwhile) are a 409 or a
    404, not a 500."""
    conflict = lambda: ConflictError(  # noqa: E731
        "The file was written at the same moment by another request; try again"
    )
    await flush_mapping_violations(
        session,
        {
            "uq_workspace_files_conversation_id_path": conflict,
            "uq_workspace_file_versions_file_id_version": conflict,
            "fk_workspace_files_conversation_id_conversations": lambda: NotFoundError(
                "Conversation", conversation_id
            ),
        },
    )
    await session.execute(
        update(Conversation)
        .where(Conversation.conversation_id == conversation_id)
        .values(files_version=Conversation.files_version + 1)
        .execution_options(synchronize_session=False)
    )


async def files_version(session: AsyncSession, conversation_id: uuid.UUID) -> int:
    value = await session.scalar(
        select(Conversation.files_version).where(Conversation.conversation_id == conversation_id)
    )
    return int(value or 0)


def mime_type_of(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


@dataclass(frozen=True)
class FileCaps:
    """How big one file may be: by its MIME type (guessed from its path; an exact type
    first, then `type/*`), else the default."""

    default: int
    by_type: Mapping[str, int] = field(default_factory=dict)

    def for_path(self, path: str) -> int:
        mime = mime_type_of(path).lower()
        cap = self.by_type.get(mime, self.by_type.get(f"{mime.partition('/')[0]}/*"))
        return self.default if cap is None else cap

    def check(self, path: str, size: int) -> None:
        """413 FILE_TOO_LARGE if a file of `size` bytes at `path` is over its cap."""
        cap = self.for_path(path)
        if size > cap:
            raise PayloadTooLargeError(
                f"{path} ({mime_type_of(path)}) is larger than its limit of {cap} bytes",
                code="FILE_TOO_LARGE",
            )


@dataclass(frozen=True)
class FileLimits:
    """How big one file may be, and all the tenant's current files together (None: no
    limit)."""

    caps: FileCaps
    quota_bytes: int | None


async def tenant_limits(session: AsyncSession, tenant_id: str, caps: FileCaps) -> FileLimits:
    return FileLimits(caps, (await tenant_settings(session, tenant_id)).storage_quota_bytes)


async def _check_limits(
    session: AsyncSession,
    scope: TenantScope,
    limits: FileLimits,
    path: str,
    size: int,
    replaced: int,
) -> None:
    limits.caps.check(path, size)
    if limits.quota_bytes is None:
        return
    used = await session.scalar(
        select(func.coalesce(func.sum(WorkspaceFile.size), 0)).where(
            WorkspaceFile.tenant_id == scope.tenant_id, WorkspaceFile.deleted.is_(False)
        )
    )
    if int(used or 0) - replaced + size > limits.quota_bytes:
        raise PayloadTooLargeError(
            f"The tenant's storage quota of {limits.quota_bytes} bytes would be exceeded",
            code="QUOTA_EXCEEDED",
        )


@dataclass(frozen=True)
class Change:
    """One version a write made: None when the content was what the file already held."""

    file: WorkspaceFile
    version: WorkspaceFileVersion | None


async def _file(
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    path: str,
    *,
    for_update: bool = False,
) -> WorkspaceFile | None:
    query = scope.select(WorkspaceFile).where(
        WorkspaceFile.conversation_id == conversation_id, WorkspaceFile.path == path
    )
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def write_file(
    session: AsyncSession,
    store: ObjectStore,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    path: str,
    data: bytes,
    *,
    limits: FileLimits,
    source: str,
    user_id: str | None = None,
    run_id: uuid.UUID | None = None,
) -> Change:
    """Record `data` as the file's next version (its blob stored first); no new version
    when the content is unchanged. `source` is user_upload, or for a run's changes
    agent_created / agent_modified (which of the two is decided here). 413 past the
    file size cap or the tenant's quota."""
    sha = hashlib.sha256(data).hexdigest()
    file = await _file(session, scope, conversation_id, path, for_update=True)
    if file is not None and not file.deleted and file.sha256 == sha:
        return Change(file, None)
    replaced = file.size if file is not None and not file.deleted else 0
    await _check_limits(session, scope, limits, path, len(data), replaced)
    key = blob_key(scope.tenant_id, conversation_id, sha)
    if await store.head(key) is None:
        await store.put(key, data)
    if source != "user_upload":
        source = "agent_created" if file is None or file.deleted else "agent_modified"
    if file is None:
        file = WorkspaceFile(
            file_id=uuid.uuid4(),
            tenant_id=scope.tenant_id,
            conversation_id=conversation_id,
            path=path,
            current_version=0,
            size=0,
            mime_type=mime_type_of(path),
        )
        session.add(file)
    file.size, file.sha256, file.deleted = len(data), sha, False
    return await _new_version(session, file, source=source, run_id=run_id, user_id=user_id)


async def _new_version(
    session: AsyncSession,
    file: WorkspaceFile,
    *,
    source: str,
    run_id: uuid.UUID | None,
    user_id: str | None,
) -> Change:
    """The file's next version, as the file now is (a tombstone if it is deleted)."""
    file.current_version += 1
    version = WorkspaceFileVersion(
        file_id=file.file_id,
        tenant_id=file.tenant_id,
        version=file.current_version,
        sha256=file.sha256,
        size=file.size,
        source=source,
        run_id=run_id,
        user_id=user_id,
    )
    session.add(version)
    await _bump(session, file.conversation_id)
    return Change(file, version)


async def delete_file(
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    path: str,
    *,
    source: str = "user_deleted",
    user_id: str | None = None,
    run_id: uuid.UUID | None = None,
) -> Change:
    """A tombstone version: the file is gone from the workspace, its history stays."""
    file = await _file(session, scope, conversation_id, path, for_update=True)
    if file is None or file.deleted:
        raise NotFoundError("File", path)
    file.size, file.sha256, file.deleted, file.presented = 0, None, True, False
    return await _new_version(session, file, source=source, run_id=run_id, user_id=user_id)


async def list_files(
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    *,
    prefix: str | None,
    presented: bool | None,
    limit: int,
    offset: int,
) -> tuple[list[WorkspaceFile], int]:
    await get_conversation(session, scope, conversation_id)
    query = scope.select(WorkspaceFile).where(
        WorkspaceFile.conversation_id == conversation_id, WorkspaceFile.deleted.is_(False)
    )
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(WorkspaceFile.path.like(f"{escaped}%", escape="\\"))
    if presented is not None:
        query = query.where(WorkspaceFile.presented.is_(presented))
    return await paginate(session, query, WorkspaceFile.path, limit=limit, offset=offset)


async def current_files(
    session: AsyncSession, tenant_id: str, conversation_id: uuid.UUID
) -> list[WorkspaceFile]:
    """Every file of the conversation, deleted ones included (for a cache to follow)."""
    query = TenantScope(tenant_id).select(WorkspaceFile)
    return list(
        await session.scalars(query.where(WorkspaceFile.conversation_id == conversation_id))
    )


async def file_version(
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    path: str,
    version: int | None,
) -> tuple[WorkspaceFile, WorkspaceFileVersion]:
    """The file and its current version (or version `version`); 404 for a deleted file's
    current state or a version it never had."""
    await get_conversation(session, scope, conversation_id)
    file = await _file(session, scope, conversation_id, path)
    if file is None or (version is None and file.deleted):
        raise NotFoundError("File", path)
    number = version if version is not None else file.current_version
    row = await session.scalar(
        select(WorkspaceFileVersion).where(
            WorkspaceFileVersion.file_id == file.file_id,
            WorkspaceFileVersion.version == number,
        )
    )
    if row is None or row.sha256 is None:
        raise NotFoundError("File version", f"{path}@{number}")
    return file, row


async def versions(
    session: AsyncSession,
    scope: TenantScope,
    conversation_id: uuid.UUID,
    path: str,
    *,
    limit: int,
    offset: int,
) -> tuple[list[WorkspaceFileVersion], int]:
    await get_conversation(session, scope, conversation_id)
    file = await _file(session, scope, conversation_id, path)
    if file is None:
        raise NotFoundError("File", path)
    query = select(WorkspaceFileVersion).where(WorkspaceFileVersion.file_id == file.file_id)
    return await paginate(
        session, query, WorkspaceFileVersion.version.desc(), limit=limit, offset=offset
    )


async def mark_presented(
    session: AsyncSession, scope: TenantScope, conversation_id: uuid.UUID, paths: list[str]
) -> list[WorkspaceFile]:
    """Mark the files (as they are now) presented to the user; paths that name no current
    file are passed over."""
    query = scope.select(WorkspaceFile).where(
        WorkspaceFile.conversation_id == conversation_id,
        WorkspaceFile.path.in_(paths),
        WorkspaceFile.deleted.is_(False),
    )
    files = list(await session.scalars(query.order_by(WorkspaceFile.path)))
    for file in files:
        file.presented = True
    await session.flush()
    return files


async def remove_stored(
    store: ObjectStore,
    *,
    keys: list[str] | None = None,
    prefix: str | None = None,
    local: Sequence[Path] = (),
) -> None:
    """After a delete is committed: its blobs (the keys, or all under a conversation's or
    tenant's prefix) leave the store, each tried again with back-off while the store
    fails; and the node's cached copies go."""
    for path in local:
        await asyncio.to_thread(_remove_local, path)
    if prefix is not None:
        keys = [info.key async for info in store.list(prefix)]
    for key in keys or []:
        for attempt in range(DELETE_ATTEMPTS):
            try:
                await store.delete(key)
                break
            except Exception:
                await asyncio.sleep(0.2 * 2**attempt)
        else:
            log.error("stored_blob_not_deleted", key=key)


def _remove_local(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
