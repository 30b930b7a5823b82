"""Properties: energy is conserved under duplicates, shuffles, spikes and rollovers, and
spreading it over windows loses nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from greenmon.aggregator.consumption import ConsumptionRules, classify
from greenmon.aggregator.windows import attribute
from greenmon.registry import Registry
from tests.aggregator.conftest import meter, readings, write_registry

ROLLOVERS = (None, 9_999.0, 99_999_999.0)
MULTIPLIERS = (1.0, 40.0, 200.0)
# no robust limit: the property is about conservation, not about plausibility
NO_LIMIT = ConsumptionRules(min_rate_samples=1_000_000)
T0 = datetime(2025, 3, 10, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def registries(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[float | None, float], Registry]:
    root: Path = tmp_path_factory.mktemp("property-registries")
    return {
        (rollover, mult): write_registry(
            root / f"{rollover}-{mult}",
            [meter("M", rollover="" if rollover is None else rollover, multiplier=mult)],
        )
        for rollover in ROLLOVERS
        for mult in MULTIPLIERS
    }


@st.composite
def register_series(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(3, 40))
    increments = draw(st.lists(st.floats(0, 50, allow_nan=False), min_size=n, max_size=n))
    rollover = draw(st.sampled_from(ROLLOVERS))
    top = 1e6 if rollover is None else rollover
    start = draw(st.floats(0, top - 60, allow_nan=False))
    gaps = draw(st.lists(st.integers(1, 600), min_size=n, max_size=n))  # minutes
    values, total, times, now = [], start, [], T0
    for inc, gap in zip(increments, gaps, strict=True):
        total += inc
        now += timedelta(minutes=gap)
        values.append(total if rollover is None else total % (rollover + 1))
        times.append(now)
    spike = draw(st.one_of(st.none(), st.integers(1, n - 2)))
    if spike is not None:
        if all(values[i - 1] <= values[i] for i in (spike, spike + 1)):  # not next to a wrap
            values[spike] += 1e5
        else:
            spike = None
    return {
        "rollover": rollover,
        "multiplier": draw(st.sampled_from(MULTIPLIERS)),
        "rows": [("M", t, v) for t, v in zip(times, values, strict=True)],
        "expected": sum(increments[1:]),
        "spike": spike,
        "duplicate": draw(st.lists(st.integers(0, n - 1), max_size=5)),
        "order": draw(st.permutations(range(n))),
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=register_series())
def test_energy_is_conserved(case, registries) -> None:
    reg = registries[(case["rollover"], case["multiplier"])]
    rows = case["rows"]
    shuffled = [rows[i] for i in case["order"]] + [rows[i] for i in case["duplicate"]]
    c = classify(readings(shuffled), reg.meters, NO_LIMIT).collect()
    counted = c.filter("counted").get_column("quantity").sum()
    assert counted == pytest.approx(case["expected"] * case["multiplier"], rel=1e-9, abs=1e-6)
    flags = c.get_column("flag").cast(pl.String).to_list()
    assert flags.count("spike") == (case["spike"] is not None)
    assert "reset" not in flags and "jump" not in flags
    # the order of arrival and re-deliveries change nothing
    plain = classify(readings(rows), reg.meters, NO_LIMIT).collect()
    assert_frame_equal(c.drop("copies").sort("time"), plain.drop("copies").sort("time"))
    # spreading over windows keeps every kWh
    windows = attribute(c.lazy(), reg.meters, ["15m", "1h", "1d", "1mo"]).collect()
    per_window = windows.group_by("window").agg(pl.col("quantity").sum())
    for window, quantity in per_window.iter_rows():
        assert quantity == pytest.approx(counted, rel=1e-9, abs=1e-6), window
