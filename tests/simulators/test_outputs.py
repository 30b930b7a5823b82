"""A simulated year as aggregator outputs: exact annual totals, the aggregator's own shapes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from greenmon.aggregator.energy import ENERGY_FIELDS, ENERGY_TAGS
from greenmon.registry import load_registry
from greenmon.simulators.fleet import generate_fleet, write_fleet
from greenmon.simulators.outputs import daily_quantities, synthesize_year


def test_daily_quantities_add_up_to_the_design() -> None:
    fleet = generate_fleet(40, 2, leader_share=0.2)
    days = daily_quantities(fleet, 2025)
    assert days.group_by("meter").len()["len"].unique().to_list() == [365]
    sums = days.group_by("meter").agg(pl.col("quantity").sum())
    design = fleet.sim_meters.select(pl.col("meter_id").alias("meter"), "source",
                                     "annual_quantity")  # fmt: skip
    joined = sums.join(design, on="meter")
    assert set(joined["source"]) >= {"load", "pv", "export"} and "sub" not in set(joined["source"])
    for source in ("load", "pv"):
        part = joined.filter(pl.col("source") == source)
        assert part["quantity"].to_list() == pytest.approx(part["annual_quantity"].to_list())
    assert days.filter(pl.col("completeness") != 1.0).is_empty()
    # the season is there: meters sensitive to heating only use more in December than in
    # August (January has the Spring Festival)
    heated = fleet.sim_meters.filter(
        (pl.col("heating") > 0) & (pl.col("cooling") == 0) & (pl.col("source") == "load")
    )
    month = pl.col("time").dt.convert_time_zone("Asia/Shanghai").dt.month()
    by_month = (
        days.filter(pl.col("meter").is_in(heated["meter_id"].implode()))
        .group_by("meter", month.alias("m"))
        .agg(pl.col("quantity").sum())
        .pivot(on="m", index="meter", values="quantity")
    )
    assert by_month.height > 0 and (by_month["12"] > by_month["8"]).all()


def test_synthesized_outputs_have_the_aggregators_shape(tmp_path: Path) -> None:
    fleet = generate_fleet(12, 4, history_years=1)
    write_fleet(fleet, tmp_path)
    registry = load_registry(tmp_path)
    frames = synthesize_year(fleet, registry.meters, registry.enterprises, 2025,
                             completeness={"E0001": 0.5}, previous_years=1)  # fmt: skip
    energy = frames["energy"]
    assert set(ENERGY_TAGS) | set(ENERGY_FIELDS) <= set(energy.columns)
    totals = energy.filter((pl.col("carrier") == "total") & (pl.col("window") == "1d"))
    assert totals.height == 12 * 365
    year = totals.group_by("enterprise").agg((pl.col("kgce").sum() / 1000).alias("tce"))
    design = fleet.sim_enterprises.select(pl.col("enterprise_id").alias("enterprise"),
                                          "designed_tce")  # fmt: skip
    check = year.join(design, on="enterprise")
    assert check["tce"].to_list() == pytest.approx(check["designed_tce"].to_list(), rel=0.05)
    months = energy.filter((pl.col("carrier") == "total") & (pl.col("window") == "1mo"))
    local_year = pl.col("time").dt.convert_time_zone("Asia/Shanghai").dt.year()
    assert months.group_by(local_year).len().sort("time")["len"].to_list() == [12 * 12, 12 * 12]
    low = totals.filter(pl.col("enterprise") == "E0001")["completeness"].unique().to_list()
    assert low == [0.5]
