"""Registers -> classified readings: every rule of `greenmon.aggregator.consumption`, with
hand-worked numbers."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenmon.aggregator.consumption import (
    CLASSIFIED_SCHEMA,
    ConsumptionRules,
    classify,
    events,
    intervals,
    summary,
    typical_rates,
    unknown_meters,
)
from greenmon.aggregator.errors import InputFrameError
from greenmon.registry import RegistryError
from tests.aggregator.conftest import TIME, local, meter, readings, series

T0 = local(2025, 3, 10)
Q = timedelta(minutes=15)


def _flags(classified: pl.LazyFrame) -> list[str]:
    return classified.collect().sort("meter", "time").get_column("flag").cast(pl.String).to_list()


def _counted(classified: pl.LazyFrame) -> float:
    return classified.filter(pl.col("counted")).select(pl.col("quantity").sum()).collect().item()


def test_a_meter_wrapping_at_99_999_999(registry_factory) -> None:
    reg = registry_factory([meter("M", rollover=99_999_999)])
    # 99,999,990 -> 99,999,996 (+6) -> wraps to 4: 99,999,999 - 99,999,996 + 1 + 4 = 8 -> 10 (+6)
    c = classify(readings(series("M", T0, [99_999_990, 99_999_996, 4, 10])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "rollover", "normal"]
    rows = c.collect().sort("time")
    assert rows.get_column("delta").to_list()[1:] == [6.0, 8.0, 6.0]
    assert _counted(c) == 20.0


@pytest.mark.parametrize(
    ("rollover", "values", "wrapped"),
    [
        # shows hundredths: after 99,999.99 comes 0.00, a wrap adds 100,000.00
        ("99999.99", [99_999.20, 99_999.70, 0.30, 0.90], 0.60),
        # MWh with three decimals: after 999,999.999 comes 0.000
        ("999999.999", [999_999.100, 999_999.900, 0.150, 0.950], 0.250),
        # written as a spreadsheet exports a whole number: still whole units
        ("99999999.0", [99_999_990, 99_999_996, 4, 10], 8.0),
    ],
)
def test_a_register_showing_decimals_wraps_at_the_next_value_shown(
    registry_factory, rollover: str, values: list[float], wrapped: float
) -> None:
    reg = registry_factory([meter("M", rollover=rollover)])
    c = classify(readings(series("M", T0, values)), reg.meters)
    assert _flags(c) == ["baseline", "normal", "rollover", "normal"]
    delta = c.collect().sort("time").get_column("delta").to_list()
    assert delta[2] == pytest.approx(wrapped, abs=1e-6)
    assert _counted(c) == pytest.approx(values[1] - values[0] + wrapped + values[3] - values[2])


def test_a_wrap_with_a_ct_multiplier_and_a_known_limit(registry_factory) -> None:
    # multiplier 80: the register counts kWh / 80; a limit of 4,000 kWh/h (1,000 per 15 min,
    # 12.5 register units) accepts the wrapped delta of 8 register units
    reg = registry_factory([meter("M", rollover=99_999_999, multiplier=80, max_rate_per_h=4000)])
    c = classify(readings(series("M", T0, [99_999_990, 99_999_996, 4, 10])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "rollover", "normal"]
    assert _counted(c) == 20.0 * 80
    # with a limit of 400 kWh/h (1.25 register units per 15 min) every delta is implausible:
    # the wrap is not a wrap, the new value alone is too large for a fresh register
    reg = registry_factory([meter("M", rollover=99_999_999, multiplier=80, max_rate_per_h=400)])
    c = classify(readings(series("M", T0, [99_999_990, 99_999_991, 4, 5])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "reset", "normal"]
    rows = c.collect().sort("time")
    assert rows.get_column("counted").to_list() == [False, True, False, True]
    assert _counted(c) == 2.0 * 80


def test_a_replaced_meter(registry_factory) -> None:
    reg = registry_factory([meter("M", multiplier=40, rollover=999_999)])
    # old register 5,000 -> 5,010; replaced; new register 3 -> 9 (from an assumed zero)
    c = classify(readings(series("M", T0, [5000, 5010, 3, 9])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "reset", "normal"]
    assert _counted(c) == (10 + 3 + 6) * 40
    ev = events(c).collect()
    assert ev.select("meter", "kind", "value", "quantity", "counted").rows() == [
        ("M", "reset", 3.0, 120.0, True)
    ]


def test_a_drop_near_the_rollover_without_limit_uses_the_fraction_rule(registry_factory) -> None:
    reg = registry_factory([meter("M", rollover=999_999)])
    # previous in the top 10 % and new in the bottom 10 %: a wrap
    c = classify(readings(series("M", T0, [950_000, 999_000, 1_000, 2_000])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "rollover", "normal"]
    assert _counted(c) == 49_000 + 2_000 + 1_000
    # a drop from the middle of the range: a replaced meter
    c = classify(readings(series("M", T0, [400_000, 400_010, 7, 9])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "reset", "normal"]
    # no rollover registered: any drop is a reset
    reg = registry_factory([meter("N")])
    c = classify(readings(series("N", T0, [999_990, 999_998, 2, 5])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "reset", "normal"]


def test_a_spike_is_quarantined_and_its_energy_carried_by_the_bridge(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    c = classify(readings(series("M", T0, [100, 110, 90_000, 130, 140])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "spike", "normal", "normal"]
    rows = c.collect().sort("time")
    bridged = rows.row(3, named=True)
    assert bridged["start"] == rows.get_column("time")[1]  # from 110 at 00:15 ...
    assert bridged["delta"] == 20.0  # ... to 130 at 00:45
    assert rows.get_column("valid").to_list() == [True, True, False, True, True]
    assert _counted(c) == 40.0  # conserved: 140 - 100
    ev = events(c).collect()
    assert ev.select("kind", "value", "counted").rows() == [("spike", 90_000.0, False)]


def test_a_dip_and_jitter_are_quarantined_too(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    # 0 is a glitch (a dip). 121 then 120.5 is a register running backwards by jitter: each
    # of the two disagrees with its neighbours, both are set aside and the delta from 110 to
    # 130 carries the energy (only its spread over time is coarser)
    c = classify(readings(series("M", T0, [100, 0, 110, 121, 120.5, 130])), reg.meters)
    assert _flags(c) == ["baseline", "dip", "normal", "spike", "dip", "normal"]
    assert _counted(c) == 30.0


def test_a_jump_that_does_not_return_is_quarantined(registry_factory) -> None:
    reg = registry_factory([meter("M", max_rate_per_h=100)])  # at most 25 per 15 minutes
    c = classify(readings(series("M", T0, [100, 110, 5_110, 5_120, 5_130])), reg.meters)
    assert _flags(c) == ["baseline", "normal", "jump", "normal", "normal"]
    assert _counted(c) == 30.0
    ev = events(c).collect()
    assert ev.select("kind", "quantity", "counted").rows() == [("jump", 5_000.0, False)]


def test_the_robust_limit_comes_from_the_meters_own_rates(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    values = [1000.0 + 10 * i for i in range(40)]
    values += [values[-1] + 1_000_000 + 10 * i for i in range(1, 5)]  # a permanent jump
    c = classify(readings(series("M", T0, values)), reg.meters)
    flags = _flags(c)
    assert flags.count("jump") == 1 and flags[40] == "jump"
    assert _counted(c) == pytest.approx(10 * 39 + 10 * 3)
    limits = c.collect().get_column("limit_per_h")  # 10 x the 0.9 quantile of 40 per hour
    assert limits.min() == pytest.approx(400.0) and limits.max() == pytest.approx(400.0)
    # too few samples: no robust limit, the jump is counted
    few = ConsumptionRules(min_rate_samples=100)
    assert "jump" not in _flags(classify(readings(series("M", T0, values)), reg.meters, few))


def test_rates_from_history_classify_a_short_chunk_like_the_whole(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    values = [1000.0 + 10 * i for i in range(40)] + [5_000.0, 5_010.0]
    whole = classify(readings(series("M", T0, values)), reg.meters)
    rates = typical_rates(readings(series("M", T0, values[:40])), reg.meters).collect()
    assert rates.rows() == [("M", 40.0, 39)]
    chunk = readings(series("M", T0 + 38 * Q, values[38:]))
    alone = classify(chunk, reg.meters)  # 3 deltas: no limit of its own
    assert "jump" not in _flags(alone)
    with_rates = classify(chunk, reg.meters, rates=rates)
    assert _flags(with_rates) == ["baseline", "normal", "jump", "normal"]
    assert _flags(whole)[40] == "jump"


def test_interval_meters(registry_factory) -> None:
    reg = registry_factory(
        [meter("PV", kind="interval", role="generation", interval_s=900, max_rate_per_h=400)]
    )
    c = classify(readings(series("PV", T0, [10, 20, -1, 5_000, 30])), reg.meters)
    rows = c.collect().sort("time")
    assert rows.get_column("flag").cast(pl.String).to_list() == [
        "normal",
        "normal",
        "negative",
        "spike",
        "normal",
    ]
    # the first reading covers [t - interval_s, t); each later one since the previous reading
    assert rows.get_column("start").to_list()[0] == rows.get_column("time")[0] - Q
    assert rows.get_column("start").to_list()[1:] == rows.get_column("time").to_list()[:-1]
    assert rows.get_column("valid").to_list() == [True, True, False, False, True]
    assert _counted(c) == 60.0


def test_multiplier_and_interval_meter_multiplier(registry_factory) -> None:
    reg = registry_factory(
        [meter("R", multiplier=200), meter("I", kind="interval", multiplier=2.5, interval_s=3600)]
    )
    rows = series("R", T0, [1, 2, 4]) + series("I", T0, [4, 8], timedelta(hours=1))
    c = classify(readings(rows), reg.meters).collect()
    per_meter = dict(
        c.filter("counted")
        .group_by(pl.col("meter").cast(pl.String))
        .agg(pl.col("quantity").sum())
        .rows()
    )
    assert per_meter == {"R": 600.0, "I": 30.0}


def test_duplicates_and_order_change_nothing(registry_factory) -> None:
    reg = registry_factory([meter("M", rollover=9_999), meter("N")])
    rows = series("M", T0, [9_990, 9_995, 3, 50_000, 8, 12]) + series("N", T0, [1, 2, 3])
    base = classify(readings(rows), reg.meters).collect().sort("meter", "time")
    shuffled = rows[::-1] + rows[:3] + rows[4:5]
    again = classify(readings(shuffled), reg.meters).collect().sort("meter", "time")
    assert_frame_equal(base.drop("copies"), again.drop("copies"))
    assert again.get_column("copies").to_list() == [2, 2, 2, 1, 2, 1, 1, 1, 1]
    assert not again.get_column("conflict").any()


def test_conflicting_copies_keep_the_last_written(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    t1 = T0 + Q
    c = classify(
        readings([("M", T0, 10), ("M", t1, 11), ("M", T0 + 2 * Q, 12), ("M", t1, 11.5)]), reg.meters
    )
    rows = c.collect().sort("time")
    assert rows.get_column("value").to_list() == [10.0, 11.5, 12.0]
    assert rows.get_column("conflict").to_list() == [False, True, False]
    assert events(c).collect().select("kind", "value").rows() == [("conflict", 11.5)]


@pytest.mark.parametrize("late_share", [0.0, 0.05, 0.3, 0.9])
def test_late_copies_keep_the_input_order_whatever_the_share_out_of_order(
    registry_factory, late_share: float
) -> None:
    # in-order rows plus a shuffled tail of late readings and re-deliveries (some with other
    # values): the kept value is the last written, copies and conflicts as a stable sort says
    import random

    rnd = random.Random(int(late_share * 100))
    reg = registry_factory([meter("M"), meter("N")])
    rows = series("M", T0, range(0, 400, 2)) + series("N", T0, range(0, 300, 3))
    late = [r for r in rows if rnd.random() < late_share]
    again = [(m, t, v + rnd.choice([0, 0, 0.5])) for m, t, v in rnd.sample(rows, 40)]
    tail = late + again
    rnd.shuffle(tail)
    written = [r for r in rows if r not in late] + tail
    got = classify(readings(written), reg.meters).collect()
    expected = (
        readings(written)
        .with_row_index("order")
        .group_by("meter", "time")
        .agg(
            pl.col("value").sort_by("order").last(),
            pl.len().cast(pl.UInt32).alias("copies"),
            (pl.col("value").n_unique() > 1).alias("conflict"),
        )
        .sort("meter", "time")
        .collect()
    )
    assert_frame_equal(
        got.select(pl.col("meter").cast(pl.String), "time", "value", "copies", "conflict"),
        expected,
    )


def test_classified_schema_intervals_and_summary(registry_factory) -> None:
    reg = registry_factory([meter("M", rollover=99), meter("X")])
    c = classify(readings(series("M", T0, [90, 95, 2, 50, 6])), reg.meters)
    out = c.collect()
    assert tuple(out.columns) == CLASSIFIED_SCHEMA
    assert out.schema["time"] == TIME and out.schema["start"] == TIME
    iv = intervals(c).collect().sort("end")
    assert iv.get_column("quantity").to_list() == [5.0, 7.0, 4.0]
    s = summary(c).collect()
    assert s.row(0, named=True) | {"first": None, "last": None} == {
        "meter": "M",
        "readings": 5,
        "duplicates": 0,
        "conflicts": 0,
        "rollover": 1,
        "reset": 0,
        "jump": 0,
        "spike": 1,
        "dip": 0,
        "negative": 0,
        "counted_quantity": 16.0,
        "quarantined_quantity": 48.0,
        "first": None,
        "last": None,
    }


def test_unknown_meters_are_dropped_and_reported(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    rows = readings(series("M", T0, [1, 2]) + series("GHOST", T0, [5, 6, 7]))
    assert classify(rows, reg.meters).collect().height == 2
    assert unknown_meters(rows, reg.meters).collect().rows() == [("GHOST", 3)]


def test_bad_input_frames_are_refused(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    with pytest.raises(InputFrameError, match="lacks column"):
        classify(pl.LazyFrame({"meter": ["M"], "value": [1.0]}), reg.meters)
    with pytest.raises(InputFrameError, match="Datetime"):
        classify(pl.LazyFrame({"meter": ["M"], "time": [1], "value": [1.0]}), reg.meters)
    # A bad limit in meters.csv is the registry's to refuse, naming file, line and column;
    # a meters frame built by hand with one still fails here, naming the column.
    with pytest.raises(RegistryError, match=r"meters\.csv:2: max_rate_per_h: not a number"):
        registry_factory([meter("M", max_rate_per_h="fast")])
    by_hand = reg.meters.with_columns(pl.lit("fast").alias("max_rate_per_h"))
    with pytest.raises(InputFrameError, match="max_rate_per_h"):
        classify(readings(series("M", T0, [1, 2])), by_hand)


def test_naive_times_are_utc_and_categorical_meters_work(registry_factory) -> None:
    reg = registry_factory([meter("M")])
    aware = readings(series("M", T0, [1, 2, 4])).collect()
    naive = aware.with_columns(
        pl.col("time").dt.replace_time_zone(None).dt.cast_time_unit("us"),
        pl.col("meter").cast(pl.Categorical),
    )
    assert_frame_equal(
        classify(aware.lazy(), reg.meters).collect(), classify(naive.lazy(), reg.meters).collect()
    )
