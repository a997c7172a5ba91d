"""`present_files`: the built-in tool with which the agent shows files to the user. The
call is checked and remembered here; when the run ends, after its changes are recorded,
each presented file is marked so and announced in a `file_presented` event."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from claude_agent_sdk import McpSdkServerConfig, create_sdk_mcp_server, tool

from app.utils.paths import BadPathError, workspace_path

SERVER = "workspace"
TOOL = "present_files"
TOOL_NAME = f"mcp__{SERVER}__{TOOL}"
MAX_FILES = 50

_SCHEMA = {
    "type": "object",
    "properties": {
        "paths": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "maxItems": MAX_FILES,
            "description": "Files in the workspace to show the user, relative to it",
        }
    },
    "required": ["paths"],
}


class Presenter:
    """One agent process's `present_files`; `take()` hands a run what it presented."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self._presented: list[str] = []

    def take(self) -> list[str]:
        presented, self._presented = self._presented, []
        return presented

    def _check(self, raw: Any) -> str:
        if not isinstance(raw, str):
            raise BadPathError("a path is a string")
        text = raw.removeprefix(f"{self.workspace}/")
        path = workspace_path(text)
        try:
            mode = os.lstat(self.workspace / path).st_mode
        except OSError as exc:
            raise BadPathError(f"{path} is not in the workspace") from exc
        if not stat.S_ISREG(mode):
            raise BadPathError(f"{path} is not a regular file")
        return path

    async def present(self, args: dict[str, Any]) -> dict[str, Any]:
        paths = args.get("paths")
        if not isinstance(paths, list) or not paths or len(paths) > MAX_FILES:
            return _error(f"Give 1 to {MAX_FILES} paths.")
        checked: list[str] = []
        for raw in paths:
            try:
                checked.append(self._check(raw))
            except BadPathError as exc:
                return _error(f"Cannot present {raw!r}: {exc}")
        self._presented += [p for p in checked if p not in self._presented]
        text = "Presented to the user: " + ", ".join(checked)
        return {"content": [{"type": "text", "text": text}]}

    def server(self) -> McpSdkServerConfig:
        present_files = tool(
            TOOL, "Show files of the workspace to the user (they can download them).", _SCHEMA
        )(self.present)
        return create_sdk_mcp_server(SERVER, tools=[present_files])


def _error(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "is_error": True}
