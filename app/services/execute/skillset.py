"""A tenant's active skills as the CLI loads them: a local plugin folder
(`.claude-plugin/plugin.json`, `skills/<name>/…`) outside every workspace, made once per
skill set on each node and shared by the runs that have that set. Agents only read it:
the jail mounts it read-only and the policy refuses writes there."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

from app.services.skill_files import SKILL_FILE, render_skill_md, split_frontmatter
from app.services.skills import ActiveSkill, blob_key
from app.services.storage import ObjectStore

# Skills are named `tenant:<name>` for the model.
PLUGIN = "tenant"
# How a set's folder is made: a change here makes every node make its sets again.
LAYOUT = 2


def tenant_skillsets(data_dir: Path, tenant_id: str) -> Path:
    return data_dir.resolve() / "skillsets" / tenant_id


def skillset_dir(data_dir: Path, tenant_id: str, skills: Sequence[tuple[str, int, str]]) -> Path:
    """The folder of this set of (name, version, digest): equal sets share one."""
    key = hashlib.sha256(json.dumps([LAYOUT, sorted(skills)]).encode()).hexdigest()[:32]
    return tenant_skillsets(data_dir, tenant_id) / key


def qualified(name: str) -> str:
    return f"{PLUGIN}:{name}"


def skill_folder(skillset: Path, name: str) -> Path:
    return skillset / "skills" / name


async def materialise(
    store: ObjectStore, data_dir: Path, tenant_id: str, skills: Sequence[ActiveSkill]
) -> Path:
    """The set's folder, made from the object store unless this node has it already."""
    target = skillset_dir(data_dir, tenant_id, [(s.name, s.version, s.digest) for s in skills])
    if target.is_dir():
        return target
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}"
    try:
        await asyncio.to_thread(_write, staging / ".claude-plugin" / "plugin.json", _PLUGIN_JSON)
        for skill in skills:
            folder = skill_folder(staging, skill.name)
            for path, sha256 in skill.manifest:
                data = await store.get(blob_key(tenant_id, skill.skill_id, sha256))
                if path == SKILL_FILE:
                    data = cli_skill_md(data)
                await asyncio.to_thread(_write, folder / path, data)
        try:
            await asyncio.to_thread(os.rename, staging, target)
        except OSError:
            if not target.is_dir():  # not a concurrent run that made it first
                raise
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
    return target


_PLUGIN_JSON = json.dumps(
    {"name": PLUGIN, "description": "This organisation's skills", "version": "1.0.0"}
).encode()


def cli_skill_md(skill_md: bytes) -> bytes:
    """SKILL.md as the CLI gets it: its checked frontmatter written again in a form every
    YAML reader parses alike (so the CLI cannot read fields the checks did not see), and
    without a `model` of its own, so a skill cannot move a run off the tenant's model (its
    prices, its provider's model ids). The stored file stays as uploaded."""
    frontmatter, body = split_frontmatter(skill_md.decode())
    frontmatter.pop("model", None)
    return render_skill_md(frontmatter, body).encode()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def command_prompt(skillset: Path, name: str, arguments: str) -> str:
    """What a `/command args` sends the agent: the skill's instructions (as the Skill
    tool would give them) with its arguments."""
    folder = skill_folder(skillset, name)
    _, body = split_frontmatter((folder / SKILL_FILE).read_text(encoding="utf-8"))
    if "$ARGUMENTS" in body:
        body = body.replace("$ARGUMENTS", arguments)
    elif arguments:
        body = f"{body.rstrip()}\n\nARGUMENTS: {arguments}"
    return f"Base directory for this skill: {folder}\n\n{body.strip()}"


def preferred_note(names: Sequence[str]) -> str:
    """Said before the user's words when a front end asks for skills to be preferred."""
    listed = ", ".join(qualified(n) for n in names)
    return f"(For this request, use these skills first where they apply: {listed}.)\n\n"
