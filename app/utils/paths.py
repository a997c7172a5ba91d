"""Workspace paths: normalised, relative POSIX paths that stay inside the workspace."""

from __future__ import annotations

import posixpath
import unicodedata

MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
# The agent's own state in its workspace (the CLI's folder): never a user's file.
RESERVED_NAMES = frozenset({".claude"})


class BadPathError(ValueError):
    """Not a path a workspace file may have."""


def workspace_path(raw: str) -> str:
    """`raw` as a workspace file's path ("notes/a.md"), or BadPathError: no absolute paths,
    no `..`, no NUL or control characters, no backslashes, none of the reserved names,
    at most 1,024 characters and 255 bytes a name."""
    if not raw or len(raw) > MAX_PATH_CHARS:
        raise BadPathError(f"a path has 1 to {MAX_PATH_CHARS} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in raw):
        raise BadPathError("a path has no control characters")
    if "\\" in raw:
        raise BadPathError("a path uses / between its parts, never \\")
    if raw.startswith("/"):
        raise BadPathError("a path is relative to the workspace")
    parts = raw.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadPathError("a path has no empty, '.' or '..' parts")
    if parts[0] in RESERVED_NAMES:
        raise BadPathError(f"{parts[0]} is kept for the agent's own state")
    if any(len(part.encode()) > MAX_NAME_BYTES for part in parts):
        raise BadPathError(f"a name has at most {MAX_NAME_BYTES} bytes")
    normal = unicodedata.normalize("NFC", posixpath.normpath(raw))
    return normal
