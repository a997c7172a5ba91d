"""Workspace paths: what the service takes, and that the document's pattern says so."""

from __future__ import annotations

import re

import pytest

from app.utils.paths import PATH_PATTERN, BadPathError, workspace_path

DOCUMENTED = re.compile(PATH_PATTERN)


@pytest.mark.parametrize(
    "path",
    ["a", "notes/a.md", "...", "..a/.b", "emoji \U0001f600.txt", "x" * 255, "é" * 63],
)
def test_taken_and_documented(path: str) -> None:
    assert workspace_path(path) and DOCUMENTED.fullmatch(path)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "a/..",
        "..",
        "a\\b",
        "a\nb",
        "a\x90",
        "bidi\u202eevil",  # right-to-left override
        "zero\u200bwidth",
        "tag\U000e0041hidden",  # tag characters hide text
        "music\U0001d173",
        "x" * 256,
    ],
)
def test_refused_and_left_out_of_the_document(path: str) -> None:
    with pytest.raises(BadPathError):
        workspace_path(path)
    assert not DOCUMENTED.fullmatch(path)


def test_the_reserved_folder_is_refused() -> None:
    with pytest.raises(BadPathError):
        workspace_path(".claude/settings.json")
