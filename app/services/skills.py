"""A tenant's Agent Skills: stored in PostgreSQL (skills, versions with file manifests) and
the object store (files content-addressed under the skill's prefix); resolved for runs
(the active set, slash commands, preferred skills)."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ConflictError, NotFoundError, UnprocessableError
from app.models import Skill, SkillVersion
from app.services.integrity import flush_mapping_violations
from app.services.pagination import paginate
from app.services.scope import TenantScope
from app.services.skill_files import NAME, SkillFolder
from app.services.storage import ObjectStore


def skill_prefix(tenant_id: str, skill_id: uuid.UUID) -> str:
    """A skill's files, apart from every conversation's (`{tenant}/{conversation}/`)."""
    return f"{tenant_id}/skills/{skill_id}/"


def blob_key(tenant_id: str, skill_id: uuid.UUID, sha256: str) -> str:
    return f"{skill_prefix(tenant_id, skill_id)}blobs/{sha256[:2]}/{sha256}"


def manifest_of(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [
        {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for path, data in sorted(files.items())
    ]


def digest_of(manifest: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SkillMeta:
    """What a tenant says about a skill besides its files (None: keep / the default)."""

    title: str | None = None
    slash_command: str | None = None
    slash_command_description: str | None = None
    is_user_selectable: bool | None = None
    status: str | None = None


def _name_taken() -> ConflictError:
    return ConflictError(
        "A skill of that name exists; PUT a new version instead", code="SKILL_EXISTS"
    )


def _command_taken() -> ConflictError:
    return ConflictError(
        "Another skill of this tenant has that slash command", code="COMMAND_TAKEN"
    )


_CONFLICTS = {
    "uq_skills_tenant_id_name": _name_taken,
    "uq_skills_tenant_id_slash_command": _command_taken,
    "pk_skill_versions": lambda: ConflictError(
        "The skill was changed at the same moment by another request; try again"
    ),
}


async def _store_files(
    store: ObjectStore, tenant_id: str, skill_id: uuid.UUID, folder: SkillFolder
) -> None:
    for data in folder.files.values():
        key = blob_key(tenant_id, skill_id, hashlib.sha256(data).hexdigest())
        if await store.head(key) is None:
            await store.put(key, data)


def _apply_meta(skill: Skill, meta: SkillMeta) -> None:
    if meta.title is not None:
        skill.title = meta.title
    if meta.slash_command is not None:
        if not NAME.match(meta.slash_command):
            raise UnprocessableError(
                "A slash command has lowercase letters, digits and single hyphens",
                code="INVALID_SKILL",
            )
        skill.slash_command = meta.slash_command
    if meta.slash_command_description is not None:
        skill.slash_command_description = meta.slash_command_description
    if meta.is_user_selectable is not None:
        skill.is_user_selectable = meta.is_user_selectable
    if meta.status is not None:
        skill.status = meta.status


async def create_skill(
    session: AsyncSession,
    store: ObjectStore,
    scope: TenantScope,
    folder: SkillFolder,
    meta: SkillMeta,
    created_by: str | None,
) -> Skill:
    """A new skill at version 1; 409 if the tenant has one of that name (or command)."""
    existing = await session.scalar(
        select(Skill.skill_id).where(Skill.tenant_id == scope.tenant_id, Skill.name == folder.name)
    )
    if existing is not None:
        raise _name_taken()
    command = meta.slash_command or folder.name
    taken = await session.scalar(
        select(Skill.skill_id).where(
            Skill.tenant_id == scope.tenant_id, Skill.slash_command == command
        )
    )
    if taken is not None:  # checked before any file is stored
        raise _command_taken()
    skill = Skill(
        skill_id=uuid.uuid4(),
        tenant_id=scope.tenant_id,
        name=folder.name,
        title=folder.name,
        description=folder.description,
        slash_command=folder.name,
        is_user_selectable=folder.frontmatter.get("user-invocable", True) is not False,
        status="active",
        current_version=0,
    )
    _apply_meta(skill, meta)
    session.add(skill)
    await _new_version(session, store, skill, folder, created_by)
    return skill


async def _new_version(
    session: AsyncSession,
    store: ObjectStore,
    skill: Skill,
    folder: SkillFolder,
    created_by: str | None,
) -> SkillVersion:
    await _store_files(store, skill.tenant_id, skill.skill_id, folder)
    manifest = manifest_of(folder.files)
    skill.current_version += 1
    skill.description = folder.description
    version = SkillVersion(
        skill_id=skill.skill_id,
        version=skill.current_version,
        tenant_id=skill.tenant_id,
        manifest=manifest,
        frontmatter=folder.frontmatter,
        digest=digest_of(manifest),
        created_by=created_by,
    )
    session.add(version)
    await flush_mapping_violations(session, _CONFLICTS)
    return version


async def get_skill(
    session: AsyncSession, scope: TenantScope, name: str, *, for_update: bool = False
) -> Skill:
    return await scope.get(
        session, Skill, Skill.name, name, resource="Skill", for_update=for_update
    )


async def get_version(
    session: AsyncSession, scope: TenantScope, skill: Skill, version: int | None = None
) -> SkillVersion:
    number = skill.current_version if version is None else version
    row = await session.get(SkillVersion, (skill.skill_id, number))
    if row is None or row.tenant_id != scope.tenant_id:
        raise NotFoundError("Skill version", f"{skill.name}@{number}")
    return row


async def update_skill(
    session: AsyncSession,
    store: ObjectStore,
    scope: TenantScope,
    name: str,
    folder: SkillFolder,
    meta: SkillMeta,
    created_by: str | None,
) -> Skill:
    """A new version of the skill, unless its files are what the current one holds."""
    skill = await get_skill(session, scope, name, for_update=True)
    if folder.name != name:
        raise UnprocessableError(
            f"SKILL.md: `name` is the skill's name ({name}), not {folder.name}",
            code="INVALID_SKILL",
            details=[{"file": "SKILL.md", "rule": f"`name` is {name}"}],
        )
    current = await get_version(session, scope, skill)
    if current.digest != digest_of(manifest_of(folder.files)):
        await _new_version(session, store, skill, folder, created_by)
        if "user-invocable" in folder.frontmatter and meta.is_user_selectable is None:
            skill.is_user_selectable = folder.frontmatter["user-invocable"] is not False
    _apply_meta(skill, meta)
    await flush_mapping_violations(session, _CONFLICTS)
    return skill


async def patch_skill(
    session: AsyncSession, scope: TenantScope, name: str, meta: SkillMeta
) -> Skill:
    skill = await get_skill(session, scope, name, for_update=True)
    _apply_meta(skill, meta)
    await flush_mapping_violations(session, _CONFLICTS)
    return skill


async def delete_skill(session: AsyncSession, scope: TenantScope, name: str) -> str:
    """Delete the skill and its versions; its files' prefix, to remove after commit."""
    skill = await get_skill(session, scope, name, for_update=True)
    await session.delete(skill)
    await session.flush()
    return skill_prefix(scope.tenant_id, skill.skill_id)


async def list_skills(
    session: AsyncSession,
    scope: TenantScope,
    *,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Skill], int]:
    query = scope.select(Skill)
    if status is not None:
        query = query.where(Skill.status == status)
    return await paginate(session, query.order_by(Skill.name), limit=limit, offset=offset)


async def versions(
    session: AsyncSession, scope: TenantScope, name: str, *, limit: int, offset: int
) -> tuple[list[SkillVersion], int]:
    skill = await get_skill(session, scope, name)
    query = (
        scope.select(SkillVersion)
        .where(SkillVersion.skill_id == skill.skill_id)
        .order_by(SkillVersion.version.desc())
    )
    return await paginate(session, query, limit=limit, offset=offset)


async def slash_commands(session: AsyncSession, scope: TenantScope) -> list[Skill]:
    query = (
        scope.select(Skill)
        .where(Skill.status == "active", Skill.is_user_selectable.is_(True))
        .order_by(Skill.slash_command)
    )
    return list((await session.execute(query)).scalars())


async def current_frontmatters(
    session: AsyncSession, skills: list[Skill]
) -> dict[uuid.UUID, dict[str, Any]]:
    """Each skill's current version's frontmatter, by skill id."""
    if not skills:
        return {}
    keys = [(s.skill_id, s.current_version) for s in skills]
    query = select(SkillVersion.skill_id, SkillVersion.frontmatter).where(
        tuple_(SkillVersion.skill_id, SkillVersion.version).in_(keys)
    )
    return {row.skill_id: row.frontmatter for row in await session.execute(query)}


@dataclass(frozen=True)
class ActiveSkill:
    """A skill as a run has it: the version it loads."""

    skill_id: uuid.UUID
    name: str
    version: int
    digest: str
    manifest: tuple[tuple[str, str], ...]  # (path, sha256)


async def active_skills(session: AsyncSession, tenant_id: str) -> list[ActiveSkill]:
    """The tenant's active skills at their current versions, by name."""
    query = (
        select(Skill.skill_id, Skill.name, SkillVersion.version, SkillVersion.digest)
        .add_columns(SkillVersion.manifest)
        .join(
            SkillVersion,
            (SkillVersion.skill_id == Skill.skill_id)
            & (SkillVersion.version == Skill.current_version),
        )
        .where(Skill.tenant_id == tenant_id, Skill.status == "active")
        .order_by(Skill.name)
    )
    return [
        ActiveSkill(
            row.skill_id,
            row.name,
            row.version,
            row.digest,
            tuple((f["path"], f["sha256"]) for f in row.manifest),
        )
        for row in await session.execute(query)
    ]


@dataclass(frozen=True)
class Command:
    """A user's `/command args`, resolved to the skill it runs."""

    skill: str
    arguments: str


def parse_command(user_input: str) -> tuple[str, str] | None:
    """`/name args` → (name, args); None for text that is not a command (`//text` and a
    leading space are text)."""
    if not user_input.startswith("/") or user_input.startswith("//"):
        return None
    command, *rest = user_input[1:].split(maxsplit=1)
    return command, rest[0].strip() if rest else ""


async def resolve_command(
    session: AsyncSession, scope: TenantScope, user_input: str
) -> Command | None:
    """The tenant's active, user-selectable skill a `/command` names; 422 UNKNOWN_COMMAND
    for any other command."""
    parsed = parse_command(user_input)
    if parsed is None:
        return None
    command, arguments = parsed
    name = await session.scalar(
        select(Skill.name).where(
            Skill.tenant_id == scope.tenant_id,
            Skill.slash_command == command,
            Skill.status == "active",
            Skill.is_user_selectable.is_(True),
        )
    )
    if name is None:
        raise UnprocessableError(
            f"/{command[:64]} is not a command of this tenant (send //text for text that "
            "starts with a slash)",
            code="UNKNOWN_COMMAND",
        )
    return Command(name, arguments)


async def check_preferred(session: AsyncSession, scope: TenantScope, names: list[str]) -> None:
    """422 UNKNOWN_SKILL unless each name is an active skill of the tenant."""
    if not names:
        return
    found = set(
        await session.scalars(
            select(Skill.name).where(
                Skill.tenant_id == scope.tenant_id, Skill.name.in_(names), Skill.status == "active"
            )
        )
    )
    missing = [name for name in names if name not in found]
    if missing:
        raise UnprocessableError(
            f"Not an active skill of this tenant: {', '.join(missing)[:500]}",
            code="UNKNOWN_SKILL",
        )
