"""Which rows a usage summary reads: the rollup's hour buckets, its quarter-hour buckets,
or the records, by the filters, the grouping, the period's ends and the time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.services.reports import UsageFilter

START = datetime.fromisoformat("2026-03-01T00:00:00+00:00")
END = datetime.fromisoformat("2026-04-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("where", "dimensions", "zone", "width"),
    [
        (UsageFilter(START, END), ["model"], "Europe/Paris", 60),
        (UsageFilter(), ["model", "tenant"], "America/New_York", 60),
        (UsageFilter(START, END, model_id="claude-sonnet-4-5"), [], "UTC", 60),
        # Half- and quarter-hour zones: their days start off the hour.
        (UsageFilter(START, END), ["model"], "Asia/Kolkata", 15),
        (UsageFilter(START, END), ["model"], "Asia/Kathmandu", 15),
        (UsageFilter(START, END), ["model"], None, 60),  # no period: the zone does not matter
        (UsageFilter(START, END.replace(minute=45)), [], None, 15),
        (UsageFilter(START.replace(second=1), END), [], None, None),
        (UsageFilter(START, END, user_id="alice"), ["model"], "UTC", None),
        (UsageFilter(START, END, api_key_id=None), ["user"], "UTC", None),
        (UsageFilter(START, END), ["api_key"], "UTC", None),
    ],
)
def test_the_source_fits_the_question(
    where: UsageFilter, dimensions: list[str], zone: str | None, width: int | None
) -> None:
    source = where.source(dimensions, ZoneInfo(zone) if zone else None)
    assert source.width_minutes == width
