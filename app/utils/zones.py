"""IANA time zones, by name: the only zones reports and budgets count periods in."""

from __future__ import annotations

from zoneinfo import ZoneInfo, available_timezones

ZONES = frozenset(available_timezones())


def zone_named(name: str) -> ZoneInfo | None:
    """The zone of that IANA name, or None for anything else (offsets, abbreviations)."""
    return ZoneInfo(name) if name in ZONES else None
