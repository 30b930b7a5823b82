"""The whole computation: one call, idempotent, and incremental (a slice with its margin gives
the windows of the whole)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from greenmon.aggregator.bench import generate
from greenmon.aggregator.consumption import typical_rates
from greenmon.aggregator.pipeline import aggregate, data_years, with_context

START = datetime(2024, 12, 31, 16, tzinfo=UTC)  # the bench fleet's first local midnight
DAY = timedelta(days=1)
KEYS = {
    "meter_energy": ["meter", "window", "time"],
    "energy": ["enterprise", "carrier", "window", "time"],
}


def _fleet(tmp_path: Path):
    return generate(meters=20, days=6, seed=11, directory=tmp_path / "fleet")


def _sorted(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.sort(KEYS[name]).select(sorted(frame.columns))


def test_one_call_gives_every_measurement_and_reruns_change_nothing(tmp_path: Path) -> None:
    data = _fleet(tmp_path)
    first = aggregate(data.readings.lazy(), data.registry).collect()
    again = aggregate(data.readings.lazy(), data.registry).collect()
    assert set(first) == {"meter_energy", "energy", "intensity", "events", "summary"}
    for name, frame in first.items():
        assert frame.height > 0, name
        assert_frame_equal(frame.sort(frame.columns), again[name].sort(frame.columns))
    assert data_years(data.readings.lazy()) == [2024, 2025]
    kinds = set(first["events"].get_column("kind").cast(pl.String))
    assert {"spike", "dip", "reset", "rollover", "conflict"} - {"conflict"} <= kinds


def test_a_slice_with_its_margin_reproduces_the_windows_of_the_whole(tmp_path: Path) -> None:
    data = _fleet(tmp_path)
    rates = typical_rates(data.readings.lazy(), data.registry.meters).collect()
    whole = aggregate(
        data.readings.lazy(), data.registry, windows=("15m", "1h", "1d"), rates=rates
    ).collect("meter_energy", "energy")
    since, until = START + 2 * DAY, START + 4 * DAY
    part = with_context(data.readings.lazy(), since, until)
    assert part.collect().height < data.readings.height / 2
    sliced = aggregate(
        part,
        data.registry,
        windows=("15m", "1h", "1d"),
        rates=rates,
        since=since,
        until=until,
    ).collect("meter_energy", "energy")
    for name in ("meter_energy", "energy"):
        inside = whole[name].filter((pl.col("time") >= since) & (pl.col("end") <= until))
        got = sliced[name]
        assert got.height == inside.height > 0
        assert_frame_equal(_sorted(got, name), _sorted(inside, name), rel_tol=1e-9, abs_tol=1e-9)


def test_late_data_rewrites_the_windows_it_touches(tmp_path: Path) -> None:
    data = _fleet(tmp_path)
    rates = typical_rates(data.readings.lazy(), data.registry.meters).collect()
    full = aggregate(data.readings.lazy(), data.registry, windows=("1d",), rates=rates)
    expected = full.collect("meter_energy")["meter_energy"]
    # a gateway's readings of local day 3 arrive late
    late = (
        (pl.col("time") >= START + 3 * DAY)
        & (pl.col("time") < START + 4 * DAY)
        & (pl.col("meter").str.starts_with("E0001"))
    )
    early = aggregate(
        data.readings.filter(~late).lazy(), data.registry, windows=("1d",), rates=rates
    ).collect("meter_energy")["meter_energy"]
    day3 = pl.col("time") == START + 3 * DAY
    before = early.filter(day3 & pl.col("meter").str.starts_with("E0001"))
    assert (before.get_column("completeness") < 0.5).all()
    # a register's energy was already attributed across the gap: per-meter sums agree (an
    # interval meter's missing readings carry energy that only arrives with them, and what a
    # register replaced inside the gap counted before it was replaced is unknowable until then)
    replaced = (
        full.collect("events")["events"].filter(pl.col("kind") == "reset").get_column("meter")
    )
    registers = data.registry.meters.filter(
        (pl.col("kind") == "register") & ~pl.col("meter_id").is_in(replaced.implode())
    ).get_column("meter_id")
    sums = tuple(
        frame.filter(pl.col("meter").is_in(registers.implode()))
        .group_by("meter")
        .agg(pl.col("quantity").sum())
        .sort("meter")
        for frame in (early, expected)
    )
    assert_frame_equal(*sums, rel_tol=1e-9)
    # recomputing with the late readings gives exactly the full result
    after = aggregate(data.readings.lazy(), data.registry, windows=("1d",), rates=rates).collect(
        "meter_energy"
    )["meter_energy"]
    assert_frame_equal(_sorted(after, "meter_energy"), _sorted(expected, "meter_energy"))


def test_parts_of_whole_meters_side_by_side_give_the_same_result(tmp_path: Path) -> None:
    data = _fleet(tmp_path)
    whole = aggregate(data.readings.lazy(), data.registry, partitions=1).collect()
    parts = aggregate(data.readings.lazy(), data.registry, partitions=3).collect()
    keys = {
        **KEYS,
        "intensity": ["enterprise", "period", "time"],
        "events": ["meter", "time", "kind"],
        "summary": ["meter"],
    }
    for name, frame in whole.items():
        assert frame.height > 0, name
        order = keys[name]
        assert_frame_equal(
            parts[name].sort(order).select(sorted(frame.columns)),
            frame.sort(order).select(sorted(frame.columns)),
            check_dtypes=False,
            rel_tol=1e-12,
        )
