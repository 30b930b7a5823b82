"""The true world: sub-meters under their boundary, registers that add up, PV by the sun."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from greenmon.simulators.faults import FaultSpec
from greenmon.simulators.runner import RunSpec, parse_start, plan_run
from greenmon.simulators.truth import truth_frame
from tests.simulators.conftest import Run, make_run


def test_sub_meters_never_exceed_their_boundary_meter(clean_run: Run, faulty_run: Run) -> None:
    for run in (clean_run, faulty_run):
        parents = run.fleet.sim_meters.filter(pl.col("source") == "sub").select(
            "meter_id", "parent_meter_id"
        )
        subs = (
            run.truth.join(parents, on="meter_id")
            .group_by("parent_meter_id", "end")
            .agg(pl.col("quantity").sum().alias("subs"), pl.len().alias("n"))
        )
        both = subs.join(
            run.truth.select(pl.col("meter_id").alias("parent_meter_id"), "end", "quantity"),
            on=["parent_meter_id", "end"],
        )
        assert both.height == subs.height > 1000
        assert (both["subs"] <= both["quantity"]).all()
        busy = both.filter(pl.col("quantity") >= 100)  # sub-meters do cover most of it
        assert (busy["subs"] > 0.3 * busy["quantity"]).mean() > 0.9  # type: ignore[operator]


def test_register_deltas_times_multiplier_are_the_quantity(clean_run: Run) -> None:
    regs = clean_run.truth.filter(pl.col("kind") == "register").join(
        clean_run.fleet.meters.select("meter_id", "rollover"), on="meter_id"
    )
    d = regs.with_columns(
        (
            (pl.col("register") - pl.col("register").shift(1).over("meter_id"))
            % (pl.col("rollover") + 1)
            * pl.col("multiplier")
        ).alias("delta")
    ).drop_nulls("delta")
    assert d.height > 10_000
    assert ((d["delta"] - d["quantity"]).abs() <= 1e-6 * d["quantity"].abs().max()).all()  # type: ignore[operator]
    assert (regs["quantity"] >= 0).all()
    assert (regs["register"] == regs["register"].round(0)).all()  # whole display units


def test_pv_import_export_balance(clean_run: Run) -> None:
    t = clean_run.truth.with_columns(
        pl.col("end").dt.convert_time_zone("Asia/Shanghai").dt.hour().alias("hour")
    )
    pv = t.filter(pl.col("role") == "generation")
    assert pv.height > 0
    assert pv.filter(pl.col("hour").is_in([23, 0, 1, 2]))["quantity"].sum() == 0
    assert pv.filter(pl.col("hour").is_between(10, 14))["quantity"].sum() > 0
    el = t.filter(pl.col("carrier") == "electricity")
    wide = (
        el.filter(pl.col("role").is_in(["boundary", "export"]))
        .pivot(on="role", index=["enterprise_id", "end"], values="quantity")
        .drop_nulls()
    )
    assert wide.height > 0
    # the boundary meter sees the net flow: never import and export in the same interval
    assert (wide["boundary"] * wide["export"] == 0).all()
    assert (wide["export"] > 0).any()


def test_a_year_adds_up_to_the_design(tmp_path: Path) -> None:
    run = make_run(tmp_path, 6, 2, FaultSpec(), days=365, start="2025-01-01", step_s=3600)
    t = run.truth.filter(pl.col("start") >= pl.lit(run.truth["end"].min()))
    sim = run.fleet.sim_meters
    loads = sim.filter(pl.col("source") == "load").select("meter_id", "annual_quantity")
    got = t.group_by("meter_id").agg(pl.col("quantity").sum()).join(loads, on="meter_id")
    assert got.height > 5
    ratio = got["quantity"] / got["annual_quantity"]
    assert ratio.min() > 0.9 and ratio.max() < 1.1  # type: ignore[operator]


def test_same_day_same_weather_for_every_run(faulty_run: Run) -> None:
    # PV depends on the date's weather, not on when the run starts
    spec = RunSpec(parse_start("2025-06-01", 900), 2, 900, faulty_run.spec.seed)
    other = truth_frame(faulty_run.fleet, plan_run(faulty_run.fleet, spec).plan)
    pv = faulty_run.fleet.meters.filter(pl.col("role") == "generation")["meter_id"].implode()
    day = pl.col("end").dt.convert_time_zone("Asia/Shanghai").dt.date()
    a = (
        faulty_run.truth.filter(pl.col("meter_id").is_in(pv))
        .group_by(day)
        .agg(pl.col("quantity").sum())
    )
    b = other.filter(pl.col("meter_id").is_in(pv)).group_by(day).agg(pl.col("quantity").sum())
    both = a.join(b, on="end").filter(pl.col("quantity") > 0)
    assert both.height >= 1
    assert ((both["quantity"] / both["quantity_right"] - 1).abs() < 0.15).all()
