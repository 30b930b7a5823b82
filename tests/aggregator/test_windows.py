"""Intervals -> windows: proportional attribution across window edges and local days,
completeness, months, DST, and the historical Asia/Shanghai offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.aggregator.consumption import classify
from greenmon.aggregator.errors import AggregatorError
from greenmon.aggregator.windows import WINDOW_SCHEMA, attribute, window_start
from tests.aggregator.conftest import local, meter, readings, series

Q = timedelta(minutes=15)


def _windows(rows, reg, windows, **kwargs) -> pl.DataFrame:
    c = classify(readings(rows), reg.meters)
    return attribute(c, reg.meters, windows, **kwargs).collect().sort("meter", "window", "time")


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_an_interval_is_spread_over_15_minute_windows_in_proportion(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    t = _utc(2025, 3, 10, 0, 10)
    out = _windows([("M", t, 0), ("M", t + 30 * timedelta(minutes=1), 30)], reg, ["15m"])
    # [00:10, 00:40): 5 minutes in 00:00, 15 in 00:15, 10 in 00:30
    assert out.get_column("time").to_list() == [
        _utc(2025, 3, 10, 0, 0),
        _utc(2025, 3, 10, 0, 15),
        _utc(2025, 3, 10, 0, 30),
    ]
    assert out.get_column("quantity").to_list() == pytest.approx([5.0, 15.0, 10.0], rel=1e-12)
    assert out.get_column("readings").to_list() == [1, 0, 1]


def test_a_reading_on_a_window_start_closes_the_window_before(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    start = _utc(2025, 3, 10, 1, 0)
    out = _windows(series("M", start, [0, 4, 8, 12, 16]), reg, ["1h"])
    # readings 01:00 .. 02:00: the energy of [01:00, 02:00) is the hour of 01:00; the reading
    # at 02:00 lies in the next hour (which has no energy yet)
    assert out.select("time", "quantity", "readings").rows() == [
        (_utc(2025, 3, 10, 1), 16.0, 4),
        (_utc(2025, 3, 10, 2), 0.0, 1),
    ]
    # the readings 01:15 .. 02:00 cover the hour of 01:00; nothing covers any of 02:00 yet
    assert out.get_column("completeness").to_list() == [1.0, 0.0]


def test_local_days_in_shanghai_and_an_interval_across_midnight(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    # 23:00 local to 01:00 local the next day: 120 kWh, 60 to each local day
    rows = [("M", local(2025, 3, 10, 23), 1000), ("M", local(2025, 3, 11, 1), 1120)]
    out = _windows(rows, reg, ["1d"])
    assert out.select("time", "end").rows() == [
        (_utc(2025, 3, 9, 16), _utc(2025, 3, 10, 16)),
        (_utc(2025, 3, 10, 16), _utc(2025, 3, 11, 16)),
    ]
    assert out.get_column("quantity").to_list() == pytest.approx([60.0, 60.0], rel=1e-12)


def test_a_gap_is_attributed_to_every_day_it_spans(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    # silent from local noon on the 10th to local noon on the 13th: 72 hours, 720 kWh
    rows = [("M", local(2025, 3, 10, 12), 0), ("M", local(2025, 3, 13, 12), 720)]
    out = _windows(rows, reg, ["1d"])
    assert out.get_column("quantity").to_list() == pytest.approx([120, 240, 240, 120], rel=1e-12)
    assert out.get_column("readings").to_list() == [1, 0, 0, 1]
    # the first reading is a baseline (it closes no interval); the one after the gap vouches
    # for its own quarter of an hour only
    assert out.get_column("completeness").to_list() == [0.0, 0.0, 0.0, 1 / 96]


def test_completeness_is_the_share_of_the_window_valid_readings_cover(registry_factory) -> None:
    reg = registry_factory(
        [meter("A"), meter("H", kind="interval", interval_s=3600, role="generation")]
    )
    day = local(2025, 3, 10)
    values = [float(i) for i in range(97)]  # 00:00 .. 24:00 local
    a = series("A", day, values)
    del a[40:50]  # ten readings lost
    a[60] = ("A", a[60][1], 1e9)  # a spike: not a valid reading
    h = series("H", day + timedelta(hours=1), [1.0] * 24, timedelta(hours=1))
    out = _windows(a + h, reg, ["1d"]).filter(pl.col("time") == day.astimezone(UTC))
    assert dict(out.select("meter", "readings").rows()) == {"A": 96 - 10 - 1, "H": 23}
    # A: 96 quarters, less the 10 lost and the spike's; H: its readings 01:00 .. 24:00 cover the
    # whole day (the one at midnight lies in the next day but closes this day's last hour)
    assert dict(out.select("meter", "completeness").rows()) == {
        "A": pytest.approx(85 / 96),
        "H": 1.0,
    }
    # the energy over the lost readings and around the spike is all there
    assert dict(out.select("meter", "quantity").rows()) == {"A": 96.0, "H": 24.0}


def test_months_are_the_sum_of_local_days(registry_factory) -> None:
    reg = registry_factory([meter("M", interval_s=3600)])
    start = local(2025, 1, 30)
    rows = series("M", start, [float(i) for i in range(24 * 5 + 1)], timedelta(hours=1))
    out = _windows(rows, reg, ["1d", "1mo"])
    days = out.filter(pl.col("window") == "1d")
    months = out.filter(pl.col("window") == "1mo")
    assert months.select("time", "end", "quantity", "readings").rows() == [
        (_utc(2025, 1, 1) - timedelta(hours=8), _utc(2025, 1, 31, 16), 48.0, 48),
        (_utc(2025, 1, 31, 16), _utc(2025, 2, 28, 16), 72.0, 73),
    ]
    assert days.get_column("quantity").sum() == months.get_column("quantity").sum()
    # hourly readings from Jan 30 00:00 (a baseline) to Feb 4 00:00 cover 48 h of January
    # and 72 h of February
    assert months.get_column("completeness").to_list() == [
        pytest.approx(48 / (31 * 24)),
        pytest.approx(72 / (28 * 24)),
    ]


def test_a_complete_day_is_complete_in_every_window(registry_factory) -> None:
    reg = registry_factory(
        [
            meter("R"),  # register read every 15 minutes, 00:00 .. 24:00
            meter("Q", kind="interval", role="generation"),  # 15-minute intervals, 00:15 .. 24:00
            meter("H", kind="interval", interval_s=3600, carrier="natural_gas", unit="m3"),
        ]
    )
    day = local(2025, 6, 2)
    rows = series("R", day, [float(i) for i in range(97)])
    rows += series("Q", day + Q, [1.0] * 96)
    rows += series("H", day + 4 * Q, [4.0] * 24, timedelta(hours=1))
    out = _windows(rows, reg, ["15m", "1h", "1d"], since=day, until=day + timedelta(days=1))
    assert out.height == 3 * (96 + 24 + 1)
    # an hourly meter is not judged incomplete by a quarter of an hour it covers
    assert out.filter(pl.col("completeness") != 1.0).is_empty(), out.filter(
        pl.col("completeness") != 1.0
    )


def test_a_meter_silent_3_of_24_hours_is_0_875_complete_that_day(registry_factory) -> None:
    reg = registry_factory([meter("R"), meter("H", kind="interval", interval_s=3600)])
    day = local(2025, 6, 2)
    r = series("R", day, [float(i) for i in range(97)])
    del r[33:45]  # the readings 08:15 .. 11:00 lost: [08:00, 11:00) uncovered
    h = series("H", day + 4 * Q, [1.0] * 24, timedelta(hours=1))
    del h[8:11]  # the readings 09:00 .. 11:00 lost: [08:00, 11:00) uncovered
    out = _windows(r + h, reg, ["1h", "1d"], since=day, until=day + timedelta(days=1))
    days = out.filter(pl.col("window") == "1d")
    assert dict(days.select("meter", "completeness").rows()) == {"R": 0.875, "H": 0.875}
    hours = out.filter(pl.col("window") == "1h").sort("meter", "time")
    silent = [(day + timedelta(hours=h)).astimezone(UTC) for h in (8, 9, 10)]
    for name in ("R", "H"):
        got = hours.filter(pl.col("meter") == name)
        zero = got.filter(pl.col("completeness") == 0.0).get_column("time").to_list()
        assert zero == silent, name
        assert got.filter(~pl.col("time").is_in(silent))["completeness"].to_list() == [1.0] * 21


def test_a_day_of_23_hours_under_dst(registry_factory) -> None:
    reg = registry_factory([meter("M", interval_s=3600)])
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime(2025, 3, 30, 0, tzinfo=berlin)  # the clocks jump from 02:00 to 03:00
    rows = series("M", start.astimezone(UTC), [float(i) for i in range(24)], timedelta(hours=1))
    out = _windows(rows, reg, ["1d"], tz="Europe/Berlin")
    first = out.row(0, named=True)
    assert first["time"] == _utc(2025, 3, 29, 23) and first["end"] == _utc(2025, 3, 30, 22)
    assert first["readings"] == 23 and first["completeness"] == 1.0
    assert first["quantity"] == 23.0  # readings 01:00 .. 24:00 local close 23 intervals
    assert out.row(1, named=True)["readings"] == 1


def test_shanghai_summer_time_of_1990_is_honoured(registry_factory) -> None:
    reg = registry_factory([meter("M", interval_s=3600)])
    # in July 1990 Shanghai kept UTC+9: the local day starts at 15:00 UTC
    rows = series("M", _utc(1990, 7, 10, 14), [0, 1, 2, 3], timedelta(hours=1))
    out = _windows(rows, reg, ["1d"])
    assert out.get_column("time").to_list() == [_utc(1990, 7, 9, 15), _utc(1990, 7, 10, 15)]
    assert out.get_column("quantity").to_list() == pytest.approx([1.0, 2.0], rel=1e-12)


def test_since_and_until_keep_whole_windows_only(registry_factory) -> None:
    reg = registry_factory([meter("M", interval_s=3600)])
    rows = series("M", _utc(2025, 3, 10), [float(i) for i in range(12)], timedelta(hours=1))
    out = _windows(rows, reg, ["1h"], since=_utc(2025, 3, 10, 3), until=_utc(2025, 3, 10, 6))
    assert out.get_column("time").to_list() == [_utc(2025, 3, 10, h) for h in (3, 4, 5)]
    with pytest.raises(AggregatorError, match="time zone"):
        _windows(rows, reg, ["1h"], since=datetime(2025, 3, 10))


def test_schema_and_unknown_windows(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    out = _windows(series("M", _utc(2025, 3, 10), [0, 1, 2]), reg, ["15m", "1h", "1d", "1mo"])
    assert dict(out.schema) == WINDOW_SCHEMA
    assert set(out.get_column("window")) == {"15m", "1h", "1d", "1mo"}
    with pytest.raises(AggregatorError, match="unknown window"):
        _windows(series("M", _utc(2025, 3, 10), [0, 1]), reg, ["2h"])


def test_any_input_order_gives_the_same_windows(registry_factory) -> None:
    reg = registry_factory([meter("A"), meter("B", rollover=999)])
    rows = series("A", local(2025, 3, 10), [float(i) for i in range(200)])
    rows += series("B", local(2025, 3, 10, 5), [990.0 + i for i in range(30)])
    c = classify(readings(rows), reg.meters).collect()
    expected = (
        attribute(c.lazy(), reg.meters, ["15m", "1d"]).collect().sort("meter", "window", "time")
    )
    shuffled = c.sample(fraction=1.0, shuffle=True, seed=7)
    got = (
        attribute(shuffled.lazy(), reg.meters, ["15m", "1d"])
        .collect()
        .sort("meter", "window", "time")
    )
    assert_frame_equal(expected, got)


def test_window_start_expression() -> None:
    frame = pl.DataFrame({"t": [_utc(2025, 3, 10, 17, 7)]})
    got = frame.select(
        window_start(pl.col("t"), "15m").alias("q"),
        window_start(pl.col("t"), "1d").alias("d"),
        window_start(pl.col("t"), "1mo").alias("m"),
    ).row(0)
    assert got == (_utc(2025, 3, 10, 17, 0), _utc(2025, 3, 10, 16), _utc(2025, 2, 28, 16))
