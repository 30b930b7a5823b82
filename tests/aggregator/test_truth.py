"""The aggregator against the simulators' ground truth, with every fault type switched on.

The messages a simulated fleet publishes are decoded by the ingestor's codec (what reaches
`meter_reading`), duplicates and late catch-ups included, and aggregated; the results are
compared with what the meters really consumed:

- per meter, the energy between its first and last received reading equals the truth
  (rollovers, spikes, gaps, duplicates, reordering and clock skew change nothing), except on
  meters that were replaced, where the old meter's last part is unknowable and the computed
  figure is lower by at most one interval's consumption; per enterprise, comprehensive
  consumption in kgce equals the truth for every enterprise whose meters were all kept;
- every injected spike, meter replacement and rollover is reported as such;
- completeness is 1 for hours a gateway fully delivered, and below 1 for hours it lost.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from greenmon.aggregator.energy import ROLE_SIGN
from greenmon.aggregator.pipeline import aggregate
from greenmon.ingest.codec import decode
from greenmon.registry import Registry, load_registry
from greenmon.simulators.faults import parse_faults
from greenmon.simulators.fleet import generate_fleet, write_fleet
from greenmon.simulators.runner import RunSpec, parse_start, plan_run
from greenmon.simulators.truth import truth_frame

FAULTS = (
    "rollover=0.3,reset=0.15,spike=0.002,gap_catchup=0.01,gap_lost=0.01,duplicate=0.02,"
    "out_of_order=0.02,clock_skew=0.3,disconnect=0.01"
)
NOW_MS = 1_900_000_000_000
TIME = pl.Datetime("ms", "UTC")


def _has(fault: str) -> pl.Expr:
    return pl.col("faults").list.contains(fault)


@pytest.fixture(scope="module")
def case(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Registry, pl.DataFrame, dict[str, pl.DataFrame]]:
    root: Path = tmp_path_factory.mktemp("fleet")
    fleet = generate_fleet(8, 23)
    write_fleet(fleet, root)
    registry = load_registry(root)
    planned = plan_run(
        fleet, RunSpec(parse_start("2025-06-02", 900), 4, 900, 23, parse_faults(FAULTS))
    )
    truth = truth_frame(fleet, planned.plan)
    rows = []
    for topic, payload in planned.plan.messages.select("topic", "payload").iter_rows():
        for r in decode(topic, payload.encode(), registry, NOW_MS).readings:
            rows.append((r.meter, r.ts_ns // 1_000_000, r.value))
    schema = {"meter": pl.String, "t": pl.Int64, "value": pl.Float64}
    readings = pl.DataFrame(rows, schema=schema, orient="row").select(
        "meter", pl.col("t").cast(TIME).alias("time"), "value"
    )
    agg = aggregate(readings.lazy(), registry, windows=("1h", "1d"))
    out = agg.collect("meter_energy", "energy", "events")
    return registry, truth, {**out, "readings": readings, "factors": agg.factors}


def test_every_fault_kind_is_present(
    case: tuple[Registry, pl.DataFrame, dict[str, pl.DataFrame]],
) -> None:
    _, truth, _ = case
    kinds = set(truth.get_column("faults").explode().drop_nulls().to_list())
    assert {"rollover", "reset", "spike", "gap_lost", "gap_catchup", "clock_skew"} <= kinds


def test_energy_per_meter_equals_the_truth(
    case: tuple[Registry, pl.DataFrame, dict[str, pl.DataFrame]],
) -> None:
    registry, truth, out = case
    received = truth.filter(pl.col("sent"))
    # Truth between each meter's first and last received reading (in true time).
    span = received.group_by("meter_id").agg(
        pl.col("end").min().alias("first"), pl.col("end").max().alias("last")
    )
    reg = registry.meters.select("meter_id", "kind")
    true_q = (
        truth.join(span, on="meter_id")
        .join(reg, on="meter_id")
        .filter(
            pl.when(pl.col("kind") == "register")
            .then((pl.col("start") >= pl.col("first")) & (pl.col("end") <= pl.col("last")))
            .otherwise(pl.col("sent"))  # an interval meter's energy is its received readings
        )
        .group_by("meter_id")
        .agg(
            pl.col("quantity").sum().alias("truth"),
            pl.col("quantity").filter(_has("reset")).sum().alias("reset_interval"),
            _has("reset").any().alias("replaced"),
        )
    )
    got = (
        out["meter_energy"]
        .filter(pl.col("window") == "1d")
        .group_by(pl.col("meter").alias("meter_id"))
        .agg(pl.col("quantity").sum().alias("computed"))
    )
    both = true_q.join(got, on="meter_id", how="left").with_columns(
        pl.col("computed").fill_null(0.0)
    )
    assert both.height == registry.meters.height
    exact = both.filter(~pl.col("replaced"))
    bad = exact.filter(
        (pl.col("computed") - pl.col("truth")).abs() > 1e-6 * pl.col("truth").abs().clip(1.0)
    )
    assert bad.is_empty(), bad
    # Per enterprise (comprehensive consumption, kgce): boundary + generation - export, sub
    # never added, with the factors the aggregator chose; exact for every enterprise whose
    # meters were all kept.
    factor = out["factors"].filter(pl.col("year") == 2025).select("meter_id", "kgce_per_unit")
    expected = (
        both.join(registry.meters.select("meter_id", "enterprise_id", "role"), on="meter_id")
        .join(factor, on="meter_id")
        .group_by("enterprise_id")
        .agg(
            (pl.col("truth") * pl.col("kgce_per_unit") * pl.col("role").replace_strict(ROLE_SIGN))
            .sum()
            .alias("truth_kgce"),
            pl.col("replaced").any(),
        )
        .filter(~pl.col("replaced"))
    )
    computed = (
        out["energy"]
        .filter((pl.col("window") == "1d") & (pl.col("carrier") == "total"))
        .group_by(pl.col("enterprise").alias("enterprise_id"))
        .agg(pl.col("kgce").sum())
    )
    per_enterprise = expected.join(computed, on="enterprise_id")
    assert per_enterprise.height == expected.height > 0
    off = per_enterprise.filter(
        (pl.col("kgce") - pl.col("truth_kgce")).abs() > 1e-6 * pl.col("truth_kgce").abs()
    )
    assert off.is_empty(), off

    replaced = both.filter(pl.col("replaced"))
    assert replaced.height > 0
    # Lower by what the old meter registered before it was replaced: at most that interval.
    short = replaced.select((pl.col("truth") - pl.col("computed")).alias("gap"), "reset_interval")
    assert (short["gap"] >= -1e-6).all()
    assert (short["gap"] <= short["reset_interval"] + 1e-6).all()


def test_spikes_resets_and_rollovers_are_reported(
    case: tuple[Registry, pl.DataFrame, dict[str, pl.DataFrame]],
) -> None:
    _, truth, out = case
    events = out["events"]
    for fault, kind in (("spike", "spike"), ("reset", "reset"), ("rollover", "rollover")):
        injected = set(truth.filter(_has(fault) & pl.col("sent")).get_column("meter_id").to_list())
        reported = set(events.filter(pl.col("kind") == kind).get_column("meter").to_list())
        assert injected, fault
        assert injected <= reported, (fault, injected - reported)
    # Spikes are quarantined, not summed: each reported spike's reading is one the truth marks.
    spikes = events.filter(pl.col("kind") == "spike").select(
        pl.col("meter").alias("meter_id"), "time"
    )
    marked = truth.filter(_has("spike")).select("meter_id", pl.col("sent_ts").alias("time"))
    assert spikes.join(marked, on=["meter_id", "time"], how="anti").is_empty()


def test_completeness_follows_what_was_delivered(
    case: tuple[Registry, pl.DataFrame, dict[str, pl.DataFrame]],
) -> None:
    _, truth, out = case
    hours = out["meter_energy"].filter(pl.col("window") == "1h")
    # Hours in which a meter's readings were lost for good (sent = false). A reading covers
    # the quarter of an hour it closes, in device time (true end + the gateway's skew): the
    # hour holding that quarter's last millisecond misses it.
    device_ts = pl.col("end") + pl.duration(milliseconds=pl.col("skew_ms") - 1)
    lost = (
        truth.filter(~pl.col("sent") & _has("gap_lost"))
        .select("meter_id", device_ts.dt.truncate("1h").alias("time"))
        .unique()
    )
    got = hours.select(pl.col("meter").alias("meter_id"), "time", "completeness")
    in_lost = got.join(lost, on=["meter_id", "time"], how="semi")
    assert in_lost.height > 0
    assert (in_lost["completeness"] < 1.0).all()
    # A quarantined spike reading is not valid data: the quarter of an hour it closes (in
    # device time, [sent_ts - 15 min, sent_ts)) is missing from the hour(s) it overlaps.
    quarter = pl.duration(minutes=15)
    spikes = truth.filter(_has("spike") & pl.col("sent")).select(
        "meter_id",
        pl.col("sent_ts").alias("d"),
        (pl.col("sent_ts") - pl.duration(milliseconds=1)).dt.truncate("1h").alias("h"),
    )
    pieces = pl.concat(
        [
            spikes.select(
                "meter_id",
                pl.col("h").alias("time"),
                (pl.col("d") - pl.max_horizontal(pl.col("d") - quarter, pl.col("h"))).alias(
                    "missing"
                ),
            ),
            spikes.filter(pl.col("d") - quarter < pl.col("h")).select(
                "meter_id",
                (pl.col("h") - pl.duration(hours=1)).alias("time"),
                (pl.col("h") - (pl.col("d") - quarter)).alias("missing"),
            ),
        ]
    )
    expected = pieces.group_by("meter_id", "time").agg(
        (1 - pl.col("missing").sum().dt.total_milliseconds() / 3_600_000).alias("expected")
    )
    spiked = got.join(expected, on=["meter_id", "time"], how="inner")
    assert spiked.height == expected.height > 0
    assert (spiked["completeness"] - spiked["expected"]).abs().max() < 1e-12, spiked
    # Meters whose gateway delivered everything on time (no gap, no skew, no spike): every
    # hour inside the run is complete.
    clean = truth.group_by("meter_id").agg(
        (~(_has("gap_lost") | _has("gap_catchup") | _has("clock_skew") | _has("spike")))
        .all()
        .alias("clean")
    )
    first, last = truth["end"].min(), truth["end"].max()
    inner = got.join(clean.filter("clean"), on="meter_id", how="semi").filter(
        (pl.col("time") >= first - pl.duration(minutes=15))
        & (pl.col("time") < last - pl.duration(hours=1))
    )
    assert inner.height > 0
    assert (inner["completeness"] == 1.0).all(), inner.filter(pl.col("completeness") < 1)


def test_a_fault_free_simulated_day_is_complete_for_every_enterprise(tmp_path: Path) -> None:
    """The issue-10 scenario: a fleet of 20 (seed 11: PV interval meters, hourly raw-material
    gas), one fault-free day at 15 minutes. Every enterprise, carrier and meter is 1.00 in
    every window, and so is the summary `greenmon aggregate` prints."""
    from datetime import UTC, datetime, timedelta

    from greenmon.aggregator.service import _range_totals

    fleet = generate_fleet(20, 11)
    write_fleet(fleet, tmp_path)
    registry = load_registry(tmp_path)
    assert (registry.meters.get_column("interval_s") > 900).any()  # an hourly meter is there
    planned = plan_run(
        fleet, RunSpec(parse_start("2025-06-02", 900), 1, 900, 11, parse_faults("none"))
    )
    rows = []
    for topic, payload in planned.plan.messages.select("topic", "payload").iter_rows():
        for r in decode(topic, payload.encode(), registry, NOW_MS).readings:
            rows.append((r.meter, r.ts_ns // 1_000_000, r.value))
    readings = pl.DataFrame(
        rows, schema={"meter": pl.String, "t": pl.Int64, "value": pl.Float64}, orient="row"
    ).select("meter", pl.col("t").cast(TIME).alias("time"), "value")
    start = datetime(2025, 6, 1, 16, tzinfo=UTC)  # 2025-06-02 00:00 in Nantong
    end = start + timedelta(days=1)
    out = aggregate(
        readings.lazy(), registry, windows=("15m", "1h", "1d"), since=start, until=end
    ).collect("meter_energy", "energy")
    for name in ("meter_energy", "energy"):
        frame = out[name]
        assert frame.height > 0
        assert frame.filter(pl.col("completeness") != 1.0).is_empty(), frame.filter(
            pl.col("completeness") != 1.0
        )
    days = out["energy"].filter((pl.col("window") == "1d") & (pl.col("carrier") == "total"))
    assert days.height == 20
    totals = _range_totals(out["energy"], start, end)  # what `aggregate` prints
    assert totals.height == 20 and totals.get_column("completeness").to_list() == [1.0] * 20
