"""A skill's folder as uploaded, checked against the Agent Skills specification before
anything of it is stored: `SKILL.md` at the root with YAML frontmatter, a valid name and
description, safe relative paths, and size and count caps. Every refusal names the file
and the rule."""

from __future__ import annotations

import io
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from typing import Any

import yaml

from app.errors import AppError, PayloadTooLargeError, UnprocessableError
from app.utils import safe_yaml
from app.utils.paths import BadPathError, workspace_path

SKILL_FILE = "SKILL.md"
NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 1024
MAX_COMPATIBILITY_CHARS = 500
# The specification's fields, and the ones Claude Code reads besides.
SPEC_FIELDS = frozenset(
    {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}
)
CLAUDE_CODE_FIELDS = frozenset(
    {
        "argument-hint",
        "disable-model-invocation",
        "user-invocable",
        "model",
        "context",
        "agent",
        "when_to_use",
        "version",
    }
)
# Accepted by Claude Code, refused here: each would act outside the permission policy.
REFUSED_FIELDS = {"hooks": "a skill's hooks would run commands outside the permission policy"}
_FRONTMATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?$\n?", re.DOTALL | re.MULTILINE)
# As much frontmatter as the CLI reads from a file it does not trust.
MAX_FRONTMATTER_CHARS = 64 * 1024


@dataclass(frozen=True)
class SkillLimits:
    max_files: int
    max_bytes: int  # all files together, uncompressed


@dataclass(frozen=True)
class SkillFolder:
    """A checked skill: its name, its frontmatter, and its files by relative path."""

    name: str
    frontmatter: dict[str, Any]
    files: dict[str, bytes]

    @property
    def description(self) -> str:
        return str(self.frontmatter["description"])


def _refuse(file: str, rule: str) -> UnprocessableError:
    return UnprocessableError(
        f"{file}: {rule}", code="INVALID_SKILL", details=[{"file": file, "rule": rule}]
    )


def _too_large(rule: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The skill is too large: {rule}", code="SKILL_TOO_LARGE", details=[{"rule": rule}]
    )


def split_frontmatter(text: str) -> tuple[dict[str, Any], str]:
    """SKILL.md's frontmatter (a YAML mapping) and its body; a 422 if it has none or
    the YAML is broken."""
    text = text.lstrip("\ufeff")
    match = _FRONTMATTER.match(text)
    if match is None:
        raise _refuse(SKILL_FILE, "starts with YAML frontmatter between --- lines")
    block = match.group(1)
    if len(block) > MAX_FRONTMATTER_CHARS:
        raise _refuse(SKILL_FILE, f"the frontmatter has at most {MAX_FRONTMATTER_CHARS} characters")
    if "---" in block:
        # The CLI ends the frontmatter at the first `---` anywhere: both must agree.
        raise _refuse(SKILL_FILE, "the frontmatter holds no `---` but its delimiters")
    try:
        data = safe_yaml.load(block)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise _refuse(SKILL_FILE, f"the frontmatter is not valid YAML{where}") from exc
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as exc:
        raise _refuse(SKILL_FILE, "the frontmatter has a value YAML cannot read") from exc
    if not isinstance(data, dict):
        raise _refuse(SKILL_FILE, "the frontmatter is a mapping of fields")
    return data, text[match.end() :]


def render_skill_md(frontmatter: dict[str, Any], body: str) -> str:
    """SKILL.md written again from checked frontmatter: one field a line, each value in
    JSON (a subset of YAML that every reader parses alike)."""
    head = "".join(f"{key}: {json.dumps(value)}\n" for key, value in frontmatter.items())
    return f"---\n{head}---\n{body}"


def _check_frontmatter(data: dict[str, Any]) -> dict[str, Any]:
    for key in data:
        if not isinstance(key, str):
            raise _refuse(SKILL_FILE, f"field names are text, not {key!r}")
        if key in REFUSED_FIELDS:
            raise _refuse(SKILL_FILE, f"`{key}` is not allowed: {REFUSED_FIELDS[key]}")
        if key not in SPEC_FIELDS and key not in CLAUDE_CODE_FIELDS:
            known = ", ".join(sorted(SPEC_FIELDS | CLAUDE_CODE_FIELDS))
            raise _refuse(SKILL_FILE, f"unknown field `{key}` (known: {known})")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _refuse(SKILL_FILE, "`name` is required")
    if len(name) > MAX_NAME_CHARS or not NAME.match(name):
        raise _refuse(
            SKILL_FILE,
            f"`name` has 1 to {MAX_NAME_CHARS} lowercase letters, digits and hyphens, "
            "neither starting nor ending with a hyphen, without `--`",
        )
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        raise _refuse(SKILL_FILE, "`description` is required")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise _refuse(SKILL_FILE, f"`description` has at most {MAX_DESCRIPTION_CHARS} characters")
    compatibility = data.get("compatibility")
    if compatibility is not None and (
        not isinstance(compatibility, str) or len(compatibility) > MAX_COMPATIBILITY_CHARS
    ):
        raise _refuse(
            SKILL_FILE, f"`compatibility` is text of at most {MAX_COMPATIBILITY_CHARS} characters"
        )
    metadata = data.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise _refuse(SKILL_FILE, "`metadata` maps text to text")
    for key in ("license", "argument-hint", "model", "context", "agent", "when_to_use"):
        if key in data and not isinstance(data[key], str):
            raise _refuse(SKILL_FILE, f"`{key}` is text")
    for key in ("disable-model-invocation", "user-invocable"):
        if key in data and not isinstance(data[key], bool):
            raise _refuse(SKILL_FILE, f"`{key}` is true or false")
    version = data.get("version")
    if version is not None and not isinstance(version, str | int | float):
        raise _refuse(SKILL_FILE, "`version` is text or a number")
    tools = data.get("allowed-tools")
    if tools is not None and not (
        isinstance(tools, str)
        or (isinstance(tools, list) and all(isinstance(t, str) for t in tools))
    ):
        raise _refuse(SKILL_FILE, "`allowed-tools` is text or a list of text")
    # Every value is now text, a flag, a text map or a text list; a version becomes text.
    checked = {k: str(v) if k == "version" else v for k, v in data.items()}
    for text in _texts(checked):
        if "\x00" in text:
            raise _refuse(SKILL_FILE, "the frontmatter has no NUL characters")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _refuse(SKILL_FILE, "the frontmatter is valid Unicode") from exc
    return checked


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (*_texts(k), *_texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def check_folder(
    files: dict[str, bytes], limits: SkillLimits, *, name: str | None = None
) -> SkillFolder:
    """The files of a skill folder, by path relative to it: checked, or a 422 / 413.
    `name`: the folder's own name where the upload has one (a zip's enclosing folder)."""
    if len(files) > limits.max_files:
        raise _too_large(f"at most {limits.max_files} files")
    total = sum(len(data) for data in files.values())
    if total > limits.max_bytes:
        raise _too_large(f"at most {limits.max_bytes} bytes in all")
    checked: dict[str, bytes] = {}
    for raw, data in files.items():
        try:
            path = workspace_path(raw)
        except BadPathError as exc:
            raise _refuse(raw, f"not a safe relative path: {exc}") from exc
        if path in checked:
            raise _refuse(raw, "each path appears once")
        checked[path] = data
    folders = {p.rsplit("/", 1)[0] for p in checked if "/" in p}
    folders |= {f.rsplit("/", i)[0] for f in folders for i in range(f.count("/") + 1)}
    for path in checked:
        if path in folders:
            raise _refuse(path, "a path is a file or a folder, not both")
    skill_md = checked.get(SKILL_FILE)
    if skill_md is None:
        raise _refuse(SKILL_FILE, "a skill has a SKILL.md at its root")
    try:
        text = skill_md.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(SKILL_FILE, "is UTF-8 text") from exc
    frontmatter, _ = split_frontmatter(text)
    frontmatter = _check_frontmatter(frontmatter)
    if name is not None and frontmatter["name"] != name:
        raise _refuse(SKILL_FILE, f"`name` is the folder's name ({name})")
    return SkillFolder(frontmatter["name"], frontmatter, checked)


def read_zip(data: bytes, limits: SkillLimits) -> SkillFolder:
    """See `_read_zip`; a zip the zipfile module chokes on in any way is a 422."""
    try:
        return _read_zip(data, limits)
    except AppError:
        raise
    except Exception as exc:
        raise _refuse("(archive)", "is a valid zip file") from exc


def _read_zip(data: bytes, limits: SkillLimits) -> SkillFolder:
    """A zip of the skill folder: SKILL.md at its root, or inside one enclosing folder
    (whose name must be the skill's). Entries are checked before anything is read:
    traversal, absolute paths, links, duplicates, encrypted entries, and the caps on
    count and uncompressed size (as declared, and as read)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise _refuse("(archive)", "is a valid zip file") from exc
    with archive:
        entries = [e for e in archive.infolist() if not e.is_dir()]
        if len(entries) > limits.max_files:
            raise _too_large(f"at most {limits.max_files} files")
        if sum(e.file_size for e in entries) > limits.max_bytes:
            raise _too_large(f"at most {limits.max_bytes} bytes in all, uncompressed")
        seen: set[str] = set()
        for entry in entries:
            name = entry.filename
            mode = entry.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse(name, "links are not allowed")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no Unix mode recorded
                raise _refuse(name, "only regular files are allowed")
            if entry.flag_bits & 0x1:
                raise _refuse(name, "encrypted entries are not allowed")
            try:
                path = workspace_path(name)
            except BadPathError as exc:
                raise _refuse(name, f"not a safe relative path: {exc}") from exc
            if path in seen:
                raise _refuse(name, "each path appears once")
            seen.add(path)
        root = _enclosing_folder(seen)
        files: dict[str, bytes] = {}
        budget = limits.max_bytes
        for entry in entries:
            try:
                with archive.open(entry) as stream:
                    content = stream.read(budget + 1)
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
                raise _refuse(entry.filename, "can be read from the zip") from exc
            budget -= len(content)
            if budget < 0:
                raise _too_large(f"at most {limits.max_bytes} bytes in all, uncompressed")
            path = workspace_path(entry.filename)
            files[path[len(root) + 1 :] if root else path] = content
    return check_folder(files, limits, name=root)


def _enclosing_folder(paths: set[str]) -> str | None:
    """None when SKILL.md is at the zip's root; else the one folder everything is in."""
    if SKILL_FILE in paths:
        return None
    tops = {path.split("/", 1)[0] for path in paths}
    if len(tops) == 1:
        (top,) = tops
        if f"{top}/{SKILL_FILE}" in paths:
            return top
    raise _refuse(SKILL_FILE, "a skill zip has SKILL.md at its root or in one enclosing folder")
