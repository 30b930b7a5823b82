"""The judged period: a year, or the year to date in whole days, and its whole months."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from greenmon.rules.screening.period import Period, PeriodError
from tests.rules.screening.support import local


def test_whole_year() -> None:
    p = Period.of(2024)
    assert p.start == datetime(2023, 12, 31, 16, tzinfo=UTC)  # local midnight, +08:00
    assert (p.days, p.days_in_year, p.months, p.whole_year) == (366, 366, 12, True)
    assert p.ratio_end == p.end == p.year_end
    assert p.describe()["ratio_months"] == "2024-01..2024-12"
    assert p.headline() == "year 2024 (whole year, 366 days)"


@pytest.mark.parametrize(
    ("as_of", "days", "months", "to"),
    [
        (local(2025, 6, 15), 165, 5, "2025-06-14"),  # data before the 15th
        (local(2025, 6, 15, 13, 30), 165, 5, "2025-06-14"),  # a part day is left out
        (local(2025, 7, 1), 181, 6, "2025-06-30"),
        (local(2025, 1, 20), 19, 0, "2025-01-19"),  # no whole month yet
        (local(2026, 3, 1), 365, 12, "2025-12-31"),  # after the year: the whole year
    ],
)
def test_year_to_date(as_of: datetime, days: int, months: int, to: str) -> None:
    p = Period.of(2025, as_of)
    assert (p.days, p.months, p.last_day()) == (days, months, to)
    if 0 < months < 12:
        assert p.ratio_end == local(2025, months + 1, 1)
        assert f"ratios over 2025-01..2025-{months:02d}" in p.headline()
    if months == 0:
        assert "no whole month yet" in p.headline()


def test_as_of_before_the_year_is_refused() -> None:
    with pytest.raises(PeriodError, match="not after the start of 2025"):
        Period.of(2025, local(2025, 1, 1, 12))
    with pytest.raises(PeriodError, match="--year must be between"):
        Period.of(1999)
