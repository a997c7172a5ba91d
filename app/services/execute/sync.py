"""A run's workspace on this node: brought to the workspace's current state before the
run (only missing or changed files fetched, files deleted elsewhere removed), and its
changes recorded after it (found by a manifest: size and mtime first, sha256 when they
differ). Links, devices and anything outside the workspace are never followed or read."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import NotFoundError, PayloadTooLargeError
from app.services.execute.spec import workspace_dir
from app.services.scope import TenantScope
from app.services.storage import ObjectStore
from app.services.workspace import (
    FileCaps,
    blob_key,
    current_files,
    delete_file,
    files_version,
    tenant_limits,
    write_file,
)
from app.utils.paths import BadPathError, workspace_path

log = structlog.get_logger(__name__)

# path -> [size, mtime_ns, sha256] as last synced
Manifest = dict[str, list[Any]]
# The most files one run may create, change or delete.
MAX_CHANGED_FILES = 10_000


def tenant_manifests(data_dir: Path, tenant_id: str) -> Path:
    """Where this node keeps what it last synced of a tenant's workspaces: outside them,
    where no agent can touch it."""
    return data_dir.resolve() / "workspace-manifests" / tenant_id


def manifest_file(data_dir: Path, tenant_id: str, conversation_id: str) -> Path:
    return tenant_manifests(data_dir, tenant_id) / f"{conversation_id}.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load(path: Path) -> Manifest:
    data = _read_json(path)
    return data if isinstance(data, dict) else {}


def _save(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp")
    temporary.write_text(json.dumps(value))
    os.replace(temporary, path)


@contextmanager
def _regular_file(path: Path) -> Iterator[int | None]:
    """A descriptor of the file if it is a regular file reached without following a
    link, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        yield None
        return
    try:
        yield fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)


def _read_regular(path: Path) -> bytes | None:
    with _regular_file(path) as fd:
        if fd is None:
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()


def _sha256_of(path: Path) -> str | None:
    """The sha256 of the file (see `_regular_file`), read in chunks."""
    with _regular_file(path) as fd:
        if fd is None:
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1024 * 1024):
            digest.update(chunk)
        return digest.hexdigest()


def _inside_real_dirs(workspace: Path, relative: str) -> bool:
    """Every folder on the way to `relative` is a real folder (no link) or missing."""
    current = workspace
    for part in relative.split("/")[:-1]:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return True
        if not stat.S_ISDIR(mode):
            return False
    return True


def _write(workspace: Path, relative: str, data: bytes) -> list[Any] | None:
    if not _inside_real_dirs(workspace, relative):
        return None
    target = workspace / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        return None
    temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.sync"
    temporary.write_bytes(data)
    os.replace(temporary, target)
    st = os.lstat(target)
    return [st.st_size, st.st_mtime_ns, hashlib.sha256(data).hexdigest()]


def _state_file(manifest_path: Path) -> Path:
    return manifest_path.with_suffix(".state")


def cached_copy(data_dir: Path, tenant_id: str, conversation_id: str) -> list[Path]:
    """Everything this node keeps of a conversation's workspace: the files, and what it
    last synced of them (manifest and state)."""
    manifest = manifest_file(data_dir, tenant_id, conversation_id)
    return [workspace_dir(data_dir, tenant_id, conversation_id), manifest, _state_file(manifest)]


async def sync_down(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: ObjectStore,
    tenant_id: str,
    conversation_id: uuid.UUID,
    workspace: Path,
    manifest_path: Path,
    state: int,
) -> None:
    """`state` is the conversation's files_version as the run began."""
    state_path = _state_file(manifest_path)
    if await asyncio.to_thread(_read_json, state_path) == state:
        return  # this node synced the files as they are now: nothing to fetch
    async with sessionmaker() as session:
        files = await current_files(session, tenant_id, conversation_id)
    manifest = await asyncio.to_thread(_load, manifest_path)
    for file in files:
        local = workspace / file.path
        entry = manifest.get(file.path)
        if file.deleted or file.sha256 is None:
            if entry is not None:
                if await asyncio.to_thread(_unchanged, local, entry):
                    await asyncio.to_thread(local.unlink, missing_ok=True)
                manifest.pop(file.path, None)
            continue
        if (
            entry is not None
            and entry[2] == file.sha256
            and await asyncio.to_thread(_unchanged, local, entry)
        ):
            continue
        data = await store.get(blob_key(tenant_id, conversation_id, file.sha256))
        written = await asyncio.to_thread(_write, workspace, file.path, data)
        if written is None:
            log.warning("workspace_file_not_written", path=file.path)
            continue
        manifest[file.path] = written
    await asyncio.to_thread(_save, manifest_path, manifest)
    await asyncio.to_thread(_save, state_path, state)


def _unchanged(local: Path, entry: list[Any]) -> bool:
    try:
        st = os.lstat(local)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and [st.st_size, st.st_mtime_ns] == entry[:2]


@dataclass
class Scan:
    """What changed in a workspace since its manifest."""

    # path -> sha256 of what it holds now (read again, one at a time, when recorded)
    changed: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    seen: Manifest = field(default_factory=dict)
    # Files over their size cap (path, size): never read, and the run's changes are then
    # not recorded.
    too_large: list[tuple[str, int]] = field(default_factory=list)


def _scan(workspace: Path, manifest: Manifest, caps: FileCaps) -> Scan:
    scan = Scan()
    stack = [workspace]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            relative = Path(entry.path).relative_to(workspace).as_posix()
            if entry.is_dir(follow_symlinks=False):
                if relative != ".claude":
                    stack.append(Path(entry.path))
                continue
            if not entry.is_file(follow_symlinks=False):
                continue  # links, devices, sockets: never followed nor kept
            try:
                relative = workspace_path(relative)
            except BadPathError:
                continue
            st = entry.stat(follow_symlinks=False)
            known = manifest.get(relative)
            if known is not None and [st.st_size, st.st_mtime_ns] == known[:2]:
                scan.seen[relative] = known
                continue
            if st.st_size > caps.for_path(relative):
                scan.too_large.append((relative, st.st_size))
                continue
            sha = _sha256_of(Path(entry.path))
            if sha is None:
                continue
            scan.seen[relative] = [st.st_size, st.st_mtime_ns, sha]
            if known is None or known[2] != sha:
                scan.changed[relative] = sha
    scan.deleted = [path for path in manifest if path not in scan.seen]
    return scan


@dataclass
class Changes:
    created: list[dict[str, Any]] = field(default_factory=list)
    modified: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.created or self.modified or self.deleted)

    def event(self) -> dict[str, Any]:
        return {"created": self.created, "modified": self.modified, "deleted": self.deleted}


async def sync_up(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: ObjectStore,
    tenant_id: str,
    conversation_id: uuid.UUID,
    workspace: Path,
    manifest_path: Path,
    *,
    run_id: uuid.UUID,
    user_id: str | None,
    caps: FileCaps,
) -> Changes:
    """Record what the run changed in the workspace, as versions of the run: all of it or
    (past a size cap or the tenant's quota: PayloadTooLargeError) none of it."""
    manifest = await asyncio.to_thread(_load, manifest_path)
    scan = await asyncio.to_thread(_scan, workspace, manifest, caps)
    for path, size in scan.too_large:
        caps.check(path, size)  # raises FILE_TOO_LARGE
    if len(scan.changed) + len(scan.deleted) > MAX_CHANGED_FILES:
        raise PayloadTooLargeError(
            f"The run changed more than {MAX_CHANGED_FILES} files", code="TOO_MANY_FILES"
        )
    changes = Changes()
    if not scan.changed and not scan.deleted:
        await asyncio.to_thread(_save, manifest_path, scan.seen)
        return changes
    scope = TenantScope(tenant_id)
    state_path = _state_file(manifest_path)
    async with sessionmaker() as session, session.begin():
        limits = await tenant_limits(session, tenant_id, caps)
        before = await files_version(session, conversation_id)
        for path in sorted(scan.changed):
            data = await asyncio.to_thread(_read_regular, workspace / path)
            if data is None:
                continue  # gone since the scan
            scan.seen[path][2] = hashlib.sha256(data).hexdigest()
            change = await write_file(
                session,
                store,
                scope,
                conversation_id,
                path,
                data,
                limits=limits,
                source="agent",
                run_id=run_id,
                user_id=user_id,
            )
            if change.version is not None:
                created = change.version.source == "agent_created"
                kind = changes.created if created else changes.modified
                kind.append({"path": path, "version": change.version.version})
        for path in sorted(scan.deleted):
            try:
                change = await delete_file(
                    session,
                    scope,
                    conversation_id,
                    path,
                    source="agent_deleted",
                    run_id=run_id,
                    user_id=user_id,
                )
            except NotFoundError:
                continue
            assert change.version is not None
            changes.deleted.append({"path": path, "version": change.version.version})
        after = await files_version(session, conversation_id)
    await asyncio.to_thread(_save, manifest_path, scan.seen)
    # If nothing else changed the files since this node synced them, what it has now is
    # their state: the next run here need fetch nothing. Else the next run checks each.
    if await asyncio.to_thread(_read_json, state_path) == before:
        await asyncio.to_thread(_save, state_path, after)
    else:
        await asyncio.to_thread(state_path.unlink, missing_ok=True)
    return changes
