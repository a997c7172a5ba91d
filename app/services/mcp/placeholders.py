"""`${secrets.NAME}`, `${request.NAME}`, `${tenant.id}`, `${user.id}`,
`${conversation.id}`: substituted in a server's headers, URL and environment, in the
service only, each server getting only what its own config names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from app.errors import UnprocessableError

PLACEHOLDER = re.compile(r"\$\{([a-z]+)\.([A-Za-z_][A-Za-z0-9_]{0,63})\}")
ANY_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")
CONTEXT_NAMES = {("tenant", "id"), ("user", "id"), ("conversation", "id")}
Key = tuple[str, str]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


def check(value: Any) -> set[Key]:
    """The placeholders a config names; 422 for one that is not a known form."""
    found: set[Key] = set()
    for text in _strings(value):
        for raw in ANY_PLACEHOLDER.findall(text):
            match = PLACEHOLDER.fullmatch(raw)
            key = (match.group(1), match.group(2)) if match else None
            if key is None or not (key[0] in ("secrets", "request") or key in CONTEXT_NAMES):
                raise UnprocessableError(
                    f"{raw} is not a placeholder: use ${{secrets.NAME}}, ${{request.NAME}}, "
                    "${tenant.id}, ${user.id} or ${conversation.id}",
                    code="BAD_PLACEHOLDER",
                )
            found.add(key)
    return found


class UnresolvedPlaceholderError(UnprocessableError):
    code = "UNRESOLVED_PLACEHOLDER"


def substitute(value: Any, values: Mapping[Key, str], server: str) -> Any:
    """`value` with every placeholder replaced; 422 naming the server and the first
    placeholder that has no value."""

    def one(match: re.Match[str]) -> str:
        key = (match.group(1), match.group(2))
        if key not in values:
            raise UnresolvedPlaceholderError(
                f"MCP server {server}: {match.group(0)} has no value (set the secret, or send "
                "the token with the stream request)"
            )
        return values[key]

    if isinstance(value, str):
        return PLACEHOLDER.sub(one, value)
    if isinstance(value, Mapping):
        return {k: substitute(v, values, server) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, values, server) for v in value]
    return value
