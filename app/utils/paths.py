"""Workspace paths: normalised, relative POSIX paths that stay inside the workspace."""

from __future__ import annotations

import posixpath
import re
import sys
import unicodedata

MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255
# The agent's own state in its workspace (the CLI's folder): never a user's file.
RESERVED_NAMES = frozenset({".claude"})


def _refused_characters(*, surrogates: bool) -> str:
    """A regex class of what no path holds: control, format (and surrogate) code points
    (newlines, bidi overrides, zero-width characters, and the tag characters U+E0000 to
    U+E007F, which can hide text) in every plane, and the backslash. The Basic
    Multilingual Plane as `\\uXXXX` ranges; the others as the characters themselves, which
    Python, Rust and ECMA-262 with `u` (JSON Schema) all read as one code point each."""
    categories = ("Cc", "Cf", "Cs") if surrogates else ("Cc", "Cf")
    refused = [
        cp
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in categories or chr(cp) == "\\"
    ]
    spans: list[tuple[int, int]] = []
    for cp in refused:
        if spans and spans[-1][1] == cp - 1:
            spans[-1] = (spans[-1][0], cp)
        else:
            spans.append((cp, cp))
    return "".join(_span(a, b) for a, b in spans)


def _span(first: int, last: int) -> str:
    if first > 0xFFFF:
        return chr(first) if first == last else f"{chr(first)}-{chr(last)}"
    return f"\\u{first:04x}" if first == last else f"\\u{first:04x}-\\u{last:04x}"


_HAS_REFUSED = re.compile(f"[{_refused_characters(surrogates=True)}]")
# The document's class leaves surrogates out: they are not characters (regex engines such
# as Rust's refuse them in a class), and no UTF-8 text holds them.
_REFUSED = _refused_characters(surrogates=False)


# The shape workspace_path takes, as a regular expression without lookarounds (which
# JSON Schema tools generate from): parts that are not `.` or `..`, with none of the
# refused characters, of at most 255 bytes: up to 255 ASCII characters, or up to 63 of
# any (4 bytes at most each); this leaves out some longer non-ASCII names the service
# takes. (The document adds maxLength 1,024; `.claude` is said in words.)
_ANY, _ANY_BUT_DOT = f"[^/{_REFUSED}]", f"[^./{_REFUSED}]"
_ASCII = "[\\u0020-\\u002e\\u0030-\\u005b\\u005d-\\u007e]"
_ASCII_BUT_DOT = "[\\u0020-\\u002d\\u0030-\\u005b\\u005d-\\u007e]"


def _part(char: str, char_but_dot: str, longest: int) -> str:
    """Up to `longest` characters, not `.` nor `..`: a first character that is not a dot,
    or a dot and one that is not, or two dots and at least one more character."""
    return (
        f"(?:{char_but_dot}{char}{{0,{longest - 1}}}"
        f"|\\.{char_but_dot}{char}{{0,{longest - 2}}}"
        f"|\\.\\.{char}{{1,{longest - 2}}})"
    )


_PART = (
    f"(?:{_part(_ASCII, _ASCII_BUT_DOT, MAX_NAME_BYTES)}"
    f"|{_part(_ANY, _ANY_BUT_DOT, MAX_NAME_BYTES // 4)})"
)
PATH_PATTERN = f"^{_PART}(?:/{_PART})*$"
PATH_RULES = (
    "A relative path (`reports/q3.md`): 1 to 1,024 characters, parts of at most 255 bytes "
    "that are not `.` or `..`, no backslash and no control or format characters; not in "
    "`.claude/`; an upload's is not `presented` nor ends in `/versions`"
)


class BadPathError(ValueError):
    """Not a path a workspace file may have."""


def workspace_path(raw: str) -> str:
    """`raw` as a workspace file's path ("notes/a.md"), or BadPathError: no absolute paths,
    no `..`, no NUL or control characters, no backslashes, none of the reserved names,
    at most 1,024 characters and 255 bytes a name."""
    if not raw or len(raw) > MAX_PATH_CHARS:
        raise BadPathError(f"a path has 1 to {MAX_PATH_CHARS} characters")
    if "\\" in raw:
        raise BadPathError("a path uses / between its parts, never \\")
    if _HAS_REFUSED.search(raw):
        raise BadPathError("a path has no control or format characters")
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
