"""Text as PostgreSQL and JSON take it: what an agent or a tool produced may hold NUL
characters (a binary file read, `/proc/*/environ`) or lone surrogates, which text and
jsonb columns refuse; they become U+FFFD (and integers past 64 bits become text), so a
run's records are never lost to them."""

from __future__ import annotations

import re
from typing import TypeVar

T = TypeVar("T")
_SURROGATES = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATES.sub("\ufffd", text)
    return text


def storable(value: T) -> T:
    """`value` (text, or JSON-like dicts and lists of it) with every string storable."""
    if isinstance(value, str):
        return storable_text(value)  # type: ignore[return-value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # type: ignore[return-value]  # past what jsonb and orjson hold
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [storable(v) for v in value]  # type: ignore[return-value]
    return value
