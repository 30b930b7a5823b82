"""The benchmark's three implementations agree with each other and with the fleet's truth
(on a small fleet; the full-size run is ``greenmon bench aggregate``, not a test)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from greenmon.aggregator.bench import compare, generate, register_bench, run_engine
from greenmon.aggregator.consumption import classify


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    return generate(meters=30, days=8, seed=5, directory=tmp_path_factory.mktemp("bench"))


def test_the_fleet_has_every_fault(fleet) -> None:
    faults = fleet.faults
    for kind in (
        "rollover_meters",
        "decimal_rollover_meters",  # MWh registers showing thousandths
        "resets",
        "spikes",
        "dips",
        "interval_spikes",
        "gap_readings",
        "late",
        "duplicates",
    ):
        assert faults[kind] > 0, kind


def test_polars_counts_exactly_the_truth(fleet) -> None:
    c = classify(fleet.readings.lazy(), fleet.registry.meters).collect()
    got = (
        c.filter("counted")
        .group_by(pl.col("meter").cast(pl.String))
        .agg(pl.col("quantity").sum().alias("computed"))
    )
    both = fleet.truth.join(got, on="meter", how="left")
    assert both.height == fleet.registry.meters.height
    off = both.filter(
        ((pl.col("computed") - pl.col("quantity")).abs() > 1e-9 * pl.col("quantity").abs())
        | pl.col("computed").is_null()
    )
    assert off.is_empty(), off
    flags = c.get_column("flag").cast(pl.String).value_counts()
    counts = dict(flags.rows())
    assert counts["spike"] == fleet.faults["spikes"] + fleet.faults["interval_spikes"]
    assert counts["dip"] == fleet.faults["dips"]
    assert counts["reset"] == fleet.faults["resets"]
    assert counts["rollover"] == fleet.faults["rollover_meters"]
    assert "jump" not in counts


def test_the_three_implementations_agree(fleet) -> None:
    runs = [run_engine(engine, fleet) for engine in ("polars", "duckdb", "pandas")]
    differences = compare(runs)
    assert set(differences) == {"polars_vs_duckdb", "polars_vs_pandas"}
    for pair, diff in differences.items():
        assert diff["mismatches"] == 0, (pair, diff)
        assert diff["max_relative_difference"] < 1e-9, (pair, diff)
    daily = runs[0].daily
    assert daily.height == 3 * 9  # 3 enterprises x (8 days + the edge of the ninth)
    assert daily.filter(pl.col("kgce") > 0).height == 3 * 8


def test_a_difference_is_noticed(fleet) -> None:
    runs = [run_engine("polars", fleet), run_engine("polars", fleet)]
    biggest = pl.col("kgce") == pl.col("kgce").max()
    runs[1].daily = runs[1].daily.with_columns(
        pl.when(biggest).then(pl.col("kgce") * (1 + 1e-6)).otherwise("kgce")
    )
    assert compare(runs)["polars_vs_polars"]["mismatches"] == 1


def test_the_command(tmp_path: Path) -> None:
    bench = typer.Typer()
    register_bench(bench)

    @bench.callback()
    def _group() -> None:
        """bench"""

    result = CliRunner().invoke(
        bench, ["aggregate", "--meters", "10", "--days", "3", "--engine", "duckdb", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert set(summary["engines"]) == {"polars", "duckdb"}
    assert summary["checks"]["all_equal"] is True
    assert summary["engines"]["polars"]["peak_extra_mb"] >= 0


@pytest.mark.integration
def test_the_influx_source_measures_greenmon_beside_the_database() -> None:
    from greenmon.aggregator.bench_influx import run_influx_bench

    result = run_influx_bench(meters=30, days=2, rounds=1, chunk_readings=1_000, ranges=(1, 3))
    summary = result.to_dict()
    # 3 enterprises x 10 meters x 2 days of quarter hours, minus gaps
    assert 4_000 < summary["readings"] < 30 * 2 * 96
    assert summary["chunks"] > 1  # the budget split the fleet
    points = summary["points_written"]
    assert points["energy"] > 0 and points["meter_energy"] > 0 and points["reference"] > 0
    [round_] = summary["rounds"]
    for key in ("read_s", "write_s", "greenmon_s"):
        assert round_[key] > 0
    assert round_["ratio"] == pytest.approx(
        round_["greenmon_s"] / (round_["read_s"] + round_["write_s"]), rel=1e-2
    )
    assert set(round_["greenmon_phases_s"]) >= {"read", "compute", "write"}
    assert summary["peak_rss_mb"] > 50
    assert "peak_rss_within_600MB" in summary["checks"]
    assert "1000_enterprise_day_within_6s" not in summary["checks"]  # a smaller fleet
    # --ranges: one greenmon run per range over the fleet loaded for the longest (3 days)
    day, three = summary["ranges"]
    assert (day["days"], three["days"]) == (1, 3)
    assert 2_000 < day["readings"] < three["readings"] / 2
    assert three["points_written"] > day["points_written"] > 0
    assert day["peak_rss_mb"] > 50 and three["peak_rss_mb"] > 50
    assert "peak_rss_3d_within_1.2x_1d" in summary["checks"]
    assert "peak_rss_of_every_range_within_600MB" in summary["checks"]


def test_the_peak_rss_is_the_commands_own(tmp_path: Path) -> None:
    """A child forked from a large process inherits its peak RSS on Linux: the figure must be
    the command's own, whatever the benchmark process holds."""
    from greenmon.aggregator.bench_influx import greenmon_run

    ballast = bytearray(b"x" * 400_000_000)  # 400 MB resident in this process
    seconds, peak, summary = greenmon_run(
        [sys.executable, "-c", "print('{\"ok\": true}')"], tmp_path / "run.log"
    )
    assert summary == {"ok": True} and seconds > 0
    assert 1_000_000 < peak < 100_000_000 < len(ballast)


@pytest.mark.integration
def test_the_influx_source_without_ranges() -> None:
    """The default command line (no --ranges) once failed before measuring anything."""
    bench = typer.Typer()
    register_bench(bench)

    @bench.callback()
    def _group() -> None:
        """bench"""

    args = [
        "aggregate",
        "--source",
        "influx",
        "--meters",
        "10",
        "--days",
        "1",
        "--rounds",
        "1",
        "--json",
    ]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["ranges"] == [] and len(summary["rounds"]) == 1
    assert summary["readings"] > 0
