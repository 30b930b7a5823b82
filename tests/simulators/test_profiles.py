"""Load profiles have the documented shape: dips for one-shift plants, flat continuous plants.

Checked on *generated consumption* (noise, seasons and all), not only on the shape functions.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from greenmon.simulators.faults import FaultSpec
from greenmon.simulators.profiles import (
    CST_OFFSET_MS,
    MS_PER_DAY,
    activity,
    calendar,
    cooling_index,
    day_number,
    heating_index,
    solar_shape,
    temperature,
)
from tests.simulators.conftest import Run, make_run

LOCAL = pl.col("end").dt.convert_time_zone("Asia/Shanghai")


def _hourly(run: Run, pattern: str) -> pl.DataFrame:
    """Per-interval consumption of boundary gas/steam/electricity-without-PV of one pattern,
    normalised per meter by its mean, with local date/hour of the interval start."""
    sim = run.fleet.sim_meters.filter(
        (pl.col("pattern") == pattern)
        & (pl.col("source") == "load")
        & pl.col("meter_type").is_in(["electricity", "natural_gas", "steam"])
    )
    t = run.truth.filter(
        pl.col("meter_id").is_in(sim["meter_id"].implode())
        & (pl.col("start") >= pl.lit(run.truth["end"].min()))
    )
    start = pl.col("start").dt.convert_time_zone("Asia/Shanghai")
    return t.with_columns(
        (pl.col("quantity") / pl.col("quantity").mean().over("meter_id")).alias("q"),
        start.dt.date().alias("day"),
        start.dt.hour().alias("hour"),
    )


def test_one_shift_dips_at_night_on_sundays_and_holidays(clean_run: Run) -> None:
    h = _hourly(clean_run, "one_shift")
    assert h["meter_id"].n_unique() >= 3
    weekday = h.filter(pl.col("day") == date(2025, 4, 29))  # Tuesday, working day
    day_q = weekday.filter(pl.col("hour").is_between(9, 11))["q"].mean()
    night_q = weekday.filter(pl.col("hour") <= 4)["q"].mean()
    assert night_q < 0.4 * day_q  # type: ignore[operator]
    daily = h.group_by("day").agg(pl.col("q").mean()).sort("day")
    q = dict(daily.iter_rows())
    assert q[date(2025, 4, 27)] > 0.8 * q[date(2025, 4, 29)]  # 调休: a working Sunday
    for holiday in (date(2025, 5, 1), date(2025, 5, 2), date(2025, 5, 4)):
        assert q[holiday] < 0.5 * q[date(2025, 4, 29)], holiday
    assert q[date(2025, 4, 26)] < 0.8 * q[date(2025, 4, 25)]  # Saturday below Friday


def test_continuous_plants_are_flat(clean_run: Run) -> None:
    h = _hourly(clean_run, "continuous")
    assert h["meter_id"].n_unique() >= 3
    daily = h.group_by("day").agg(pl.col("q").mean())["q"]
    assert daily.std() / daily.mean() < 0.05  # type: ignore[operator]
    night = h.filter(pl.col("hour") <= 4)["q"].mean()
    day = h.filter(pl.col("hour").is_between(9, 16))["q"].mean()
    assert 0.9 < night / day < 1.1  # type: ignore[operator]
    holiday = h.filter(pl.col("day") == date(2025, 5, 1))["q"].mean()
    assert 0.9 < holiday / h["q"].mean() < 1.1  # type: ignore[operator]


def test_spring_festival_dip(tmp_path: Path) -> None:
    run = make_run(tmp_path, 40, 5, FaultSpec(), days=28, start="2025-01-13", step_s=3600)
    for pattern, ceiling in (("one_shift", 0.3), ("two_shift", 0.4)):
        h = _hourly(run, pattern)
        if h.is_empty():
            continue
        daily = dict(h.group_by("day").agg(pl.col("q").mean()).iter_rows())
        before = np.mean([daily[date(2025, 1, d)] for d in (14, 15, 16)])
        festival = np.mean([daily[date(2025, 1, 30)], daily[date(2025, 2, 1)]])
        assert festival < ceiling * before, pattern


def test_activity_and_calendar() -> None:
    cal = calendar(day_number(date(2025, 1, 20)), 30)
    one = dict(zip(cal.days.tolist(), activity("one_shift", cal).tolist(), strict=True))
    assert one[day_number(date(2025, 1, 21))] == 1.0  # Tuesday
    assert one[day_number(date(2025, 1, 29))] == 0.0  # 春节
    assert 0 < one[day_number(date(2025, 2, 8))] < 1  # make-up Saturday, still ramping back
    assert (activity("continuous", cal) == 1).all()
    assert cal.spring_festival.sum() == 8
    assert not calendar(day_number(date(2030, 1, 1)), 3).covered.any()


def test_seasons_and_sun() -> None:
    days = np.array([day_number(date(2025, 1, 15)), day_number(date(2025, 7, 20))])
    temp = temperature(days)
    assert temp[0] < 8 < 25 < temp[1]
    assert heating_index(temp)[0] > 0 == heating_index(temp)[1]
    assert cooling_index(temp)[1] > 0 == cooling_index(temp)[0]
    noon = day_number(date(2025, 6, 21)) * MS_PER_DAY - CST_OFFSET_MS + 12 * 3_600_000
    midnight = noon - 12 * 3_600_000
    sun = solar_shape(np.array([midnight, noon]))
    assert sun[0] == 0 and sun[1] > 0.8
