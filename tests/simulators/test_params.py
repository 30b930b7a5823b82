"""The packaged parameter tables: complete, consistent, every row sourced."""

from __future__ import annotations

from datetime import date

import polars as pl

from greenmon.registry import carrier_units
from greenmon.simulators.params import CLUSTERS, FUEL_CARRIERS, PATTERNS, load_params

STATUSES = {"verified", "third-party", "approximate", "unverified", "assumption", "derived"}


def test_every_table_has_source_year_status() -> None:
    p = load_params()
    for name in (
        "industries",
        "clusters",
        "counties",
        "patterns",
        "hourly",
        "holidays",
        "climate",
        "meter_types",
    ):
        frame: pl.DataFrame = getattr(p, name)
        assert {"source", "year", "status"} <= set(frame.columns), name
        assert frame["source"].null_count() == 0, name
        assert set(frame["status"].unique().to_list()) <= STATUSES, name


def test_industries_are_gbt4754_classes_of_the_six_clusters() -> None:
    p = load_params()
    ind = p.industries
    assert ind["code"].str.contains(r"^C\d{4}$").all()
    assert set(ind["cluster"].unique().to_list()) == set(CLUSTERS)
    assert p.clusters["cluster"].to_list() == list(CLUSTERS)
    # the codes: ships C37, textiles C17/C18, electronics C39, materials C26/C28/C30-32,
    # equipment C34/C35, new energy C38
    prefixes = {c[:3] for c in ind["code"].to_list()}
    assert {
        "C37",
        "C17",
        "C18",
        "C39",
        "C26",
        "C28",
        "C30",
        "C31",
        "C32",
        "C34",
        "C35",
        "C38",
    } <= prefixes
    shares = ind.select(pl.sum_horizontal(list(FUEL_CARRIERS))).to_series()
    assert (shares - 1).abs().max() < 1e-9  # type: ignore[operator]
    patterns = ind.select(pl.sum_horizontal(list(PATTERNS))).to_series()
    assert (patterns - 1).abs().max() < 1e-9  # type: ignore[operator]
    for cluster in CLUSTERS:
        weights = float(ind.filter(pl.col("cluster") == cluster)["weight"].sum())
        assert abs(weights - 1) < 1e-9, cluster


def test_counties_are_nantongs_ten() -> None:
    counties = load_params().counties["county"].to_list()
    assert len(counties) == 10
    assert {
        "崇川区",
        "通州区",
        "海门区",
        "如皋市",
        "海安市",
        "如东县",
        "启东市",
        "南通经济技术开发区",
        "苏锡通科技产业园区",
        "通州湾江海联动开发示范区",
    } == set(counties)


def test_meter_units_follow_the_kernel_carrier_table() -> None:
    units = carrier_units()
    for row in load_params().meter_types.iter_rows(named=True):
        assert row["unit"] in units[row["carrier"]], row


def test_holidays_are_consistent() -> None:
    hol = load_params().holidays
    # every make-up working day (调休上班) is a Saturday or Sunday; every holiday year has its
    # Spring Festival block of 8 or 9 days
    workdays = hol.filter(pl.col("kind") == "workday")["date"].to_list()
    assert workdays and all(d.weekday() >= 5 for d in workdays)
    for year in (2024, 2025, 2026):
        sf = hol.filter(
            (pl.col("year") == year) & (pl.col("name") == "春节") & (pl.col("kind") == "holiday")
        )["date"]
        assert 8 <= sf.len() <= 9
        days = sorted(sf.to_list())
        assert (days[-1] - days[0]).days == len(days) - 1
    assert date(2025, 1, 28) in hol["date"].to_list()  # 除夕 2025
    assert date(2026, 2, 15) in hol["date"].to_list()
