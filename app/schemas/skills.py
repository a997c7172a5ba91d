"""Agent Skills as the API takes and shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from app.schemas.common import Name, NoNul, PathText, ReadSchema, Schema

SkillStatus = Literal["active", "disabled"]
Command = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
]
CommandDescription = Annotated[str, StringConstraints(min_length=1, max_length=1024), NoNul]
FilePath = Annotated[PathText, StringConstraints(min_length=1, max_length=1024), NoNul]


class SkillMetaIn(Schema):
    """What a tenant says about a skill besides its files."""

    title: Name | None = None
    slash_command: Command | None = Field(
        default=None, description="What users type after `/`; the skill's name by default"
    )
    slash_command_description: CommandDescription | None = Field(
        default=None, description="Shown in a command menu; the skill's description by default"
    )
    is_user_selectable: bool | None = Field(
        default=None,
        description="Offered as a slash command; by default unless the frontmatter says "
        "`user-invocable: false`",
    )
    status: SkillStatus | None = None


BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class Base64File(Schema):
    base64: Annotated[str, StringConstraints(max_length=16 * 1024 * 1024, pattern=BASE64)]


class SkillCreate(SkillMetaIn):
    """A skill folder as JSON: each file's text, or its bytes as base64."""

    files: dict[
        FilePath, Annotated[str, StringConstraints(max_length=16 * 1024 * 1024), NoNul] | Base64File
    ] = Field(
        description="Path in the skill folder → content; `SKILL.md` at the root",
        min_length=1,
    )


class SkillUpload(Schema):
    """A skill folder as multipart/form-data: its files (named by `paths`, else by their
    file names), or one `archive` holding the zip of the folder; and the metadata."""

    files: list[bytes] = Field(default_factory=list)
    paths: list[PathText] = Field(default_factory=list)
    archive: bytes | None = Field(default=None, description="The zip of the skill folder")
    title: str | None = None
    slash_command: str | None = None
    slash_command_description: str | None = None
    is_user_selectable: bool | None = None
    status: SkillStatus | None = None


class SkillFileRead(ReadSchema):
    path: str
    size: int
    sha256: str


class SkillRead(ReadSchema):
    name: str
    title: str
    description: str
    slash_command: str
    slash_command_description: str | None
    is_user_selectable: bool
    status: SkillStatus
    current_version: int
    created_at: datetime
    updated_at: datetime


class SkillDetail(SkillRead):
    """A skill with its current version's frontmatter and files."""

    frontmatter: dict[str, Any]
    files: list[SkillFileRead]


class SkillVersionRead(ReadSchema):
    version: int
    files: list[SkillFileRead]
    created_by: str | None
    created_at: datetime


class SlashCommandRead(ReadSchema):
    command: str
    skill: str
    title: str
    description: str
    argument_hint: str | None
