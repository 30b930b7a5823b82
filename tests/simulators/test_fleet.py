"""The fleet generator: a valid registry, realistic structure, deterministic bytes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from greenmon.deploy.broker_auth import load_gateways_csv
from greenmon.registry import load_registry
from greenmon.simulators.errors import FleetError
from greenmon.simulators.fleet import generate_fleet, load_fleet, write_fleet
from greenmon.simulators.params import load_params

FILES = (
    "enterprises.csv",
    "meters.csv",
    "monthly.csv",
    "gateways.csv",
    "simulation_meters.csv",
    "simulation_enterprises.csv",
    "fleet.json",
)


def _bytes(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in FILES}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    write_fleet(generate_fleet(25, 42), tmp_path / "a")
    write_fleet(generate_fleet(25, 42), tmp_path / "b")
    write_fleet(generate_fleet(25, 43), tmp_path / "c")
    a, b, c = _bytes(tmp_path / "a"), _bytes(tmp_path / "b"), _bytes(tmp_path / "c")
    assert a == b
    assert all(a[name] != c[name] for name in FILES)


def test_smaller_fleet_is_a_prefix_of_a_larger_one() -> None:
    small, large = generate_fleet(8, 9), generate_fleet(30, 9)
    ids = small.enterprises["enterprise_id"].implode()
    assert small.enterprises.equals(large.enterprises.filter(pl.col("enterprise_id").is_in(ids)))
    assert small.meters.equals(large.meters.filter(pl.col("enterprise_id").is_in(ids)))


def test_registry_loads_with_zero_problems_and_round_trips(tmp_path: Path) -> None:
    fleet = generate_fleet(120, 3)
    write_fleet(fleet, tmp_path)
    registry = load_registry(tmp_path)  # raises RegistryError on any problem
    assert registry.enterprises.height == 120
    assert registry.meters.height == fleet.meters.height
    assert registry.monthly.height == 120 * 12
    back = load_fleet(tmp_path)
    for name in ("enterprises", "meters", "monthly", "gateways", "sim_meters", "sim_enterprises"):
        assert getattr(back, name).equals(getattr(fleet, name)), name
    gateways = load_gateways_csv(tmp_path / "gateways.csv")  # the broker ACL input format
    assert len(gateways) == fleet.gateways.height


def test_fleet_structure(tmp_path: Path) -> None:
    fleet = generate_fleet(300, 17)
    p = load_params()
    ent, met, sim = fleet.enterprises, fleet.meters, fleet.sim_meters
    assert set(ent["county"].unique().to_list()) <= set(p.counties["county"].to_list())
    assert ent["county"].n_unique() == 10
    assert set(ent["industry"].to_list()) <= set(p.industries["code"].to_list())
    assert fleet.sim_enterprises["cluster"].n_unique() == 6
    # electricity boundary meter everywhere
    el = met.filter((pl.col("carrier") == "electricity") & (pl.col("role") == "boundary"))
    assert el["enterprise_id"].n_unique() == 300
    # every sub-meter hangs under a boundary meter of the same carrier and enterprise
    subs = (
        sim.filter(pl.col("source") == "sub")
        .join(
            met.select(
                pl.col("meter_id").alias("parent_meter_id"),
                pl.col("carrier").alias("pc"),
                pl.col("role").alias("pr"),
                pl.col("enterprise_id").alias("pe"),
            ),
            on="parent_meter_id",
            how="left",
        )
        .join(met.select("meter_id", "carrier"), on="meter_id")
    )
    assert subs.height > 300
    assert (subs["pr"] == "boundary").all() and (subs["pc"] == subs["carrier"]).all()
    assert (subs["pe"] == subs["enterprise_id"]).all()
    # PV: a generation interval meter and an export register, on PV enterprises only
    pv = met.filter(pl.col("role") == "generation")
    exp = met.filter(pl.col("role") == "export")
    assert pv.height > 0 and (pv["kind"] == "interval").all()
    assert set(pv["enterprise_id"].to_list()) == set(exp["enterprise_id"].to_list())
    # chemical firms have a raw-material gas meter
    chem = ent.filter(pl.col("industry").is_in(["C2614", "C2651", "C2661"]))["enterprise_id"]
    feed = met.filter(pl.col("raw_material") == "true")
    assert chem.len() > 0 and set(chem.to_list()) == set(feed["enterprise_id"].to_list())
    assert (feed["carrier"] == "natural_gas").all()
    # other carriers where industries use them
    assert {"natural_gas", "steam", "diesel", "raw_coal"} <= set(met["carrier"].to_list())
    # registers show whole units: rollover = 10**digits - 1, the wrap adds rollover + 1
    regs = met.filter(pl.col("kind") == "register")
    assert regs["rollover"].null_count() == 0
    assert regs["rollover"].cast(pl.String).str.contains(r"^9{6,10}$").all()
    # the spread: green candidates and quota breaches
    sime = fleet.sim_enterprises.join(
        ent.select("enterprise_id", "annual_quota_tce"), on="enterprise_id"
    )
    breach = sime.filter(pl.col("annual_quota_tce") < pl.col("designed_tce"))
    assert 0.05 < breach.height / 300 < 0.3
    assert set(breach["design"].unique().to_list()) == {"quota_breach"}
    green = sime.filter(pl.col("design") == "green_candidate")
    assert 0.05 < green.height / 300 < 0.3 and (green["efficiency"] <= 0.7).all()
    assert (ent["key_energy_user"] == "true").sum() > 0
    assert ent["name"].n_unique() == 300  # repeats get a plant number


def test_bad_sizes_and_overwrite(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="between 1 and"):
        generate_fleet(0, 1)
    write_fleet(generate_fleet(2, 1), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FleetError, match="already holds"):
        write_fleet(generate_fleet(2, 2), tmp_path)  # another fleet: refused
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    write_fleet(generate_fleet(2, 1), tmp_path)  # the very same fleet: nothing is replaced
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "meters.csv").write_bytes(before["meters.csv"] + b"\n")  # edited by hand
    with pytest.raises(FleetError, match="already holds"):
        write_fleet(generate_fleet(2, 1), tmp_path)
    write_fleet(generate_fleet(3, 1), tmp_path, overwrite=True)
    with pytest.raises(FleetError, match="not a simulator fleet"):
        load_fleet(tmp_path / "missing")


def test_green_leaders_are_clearly_green_factory_material() -> None:
    plain = generate_fleet(200, 17)
    fleet = generate_fleet(200, 17, leader_share=0.1)
    sim = fleet.sim_enterprises
    leaders = sim.filter(pl.col("design") == "green_leader")
    assert 10 <= leaders.height <= 35
    assert leaders["efficiency"].is_between(0.30, 0.40).all()
    assert (leaders["pv_kwp"] > 0).all()
    ids = leaders["enterprise_id"].implode()
    declared = fleet.enterprises.filter(pl.col("enterprise_id").is_in(ids))
    assert (declared["energy_management_certified"] == "true").all()
    assert (declared["major_violation"] == "false").all()
    # twice the usual output per mu, on average
    per_mu = (
        sim.join(fleet.enterprises, on="enterprise_id")
        .with_columns((pl.col("annual_output_10k_yuan") / pl.col("land_area_mu")).alias("per_mu"))
        .group_by(pl.col("design") == "green_leader")
        .agg(pl.col("per_mu").median())
        .sort("design")
    )
    assert per_mu["per_mu"][1] > 1.5 * per_mu["per_mu"][0]
    # the other enterprises are exactly those of the fleet without leaders
    others = ~pl.col("enterprise_id").is_in(ids)
    assert fleet.enterprises.filter(others).equals(plain.enterprises.filter(others))
    assert fleet.meters.filter(others).equals(plain.meters.filter(others))
    assert fleet.monthly.filter(others).equals(plain.monthly.filter(others))


def test_declared_attributes_and_history(tmp_path: Path) -> None:
    fleet = generate_fleet(300, 5, history_years=1)
    write_fleet(fleet, tmp_path)
    registry = load_registry(tmp_path)  # the declared columns pass the registry's checks
    ent = fleet.enterprises.join(fleet.sim_enterprises.select("enterprise_id", "design"),
                                 on="enterprise_id")  # fmt: skip
    green = ent.filter(pl.col("design") == "green_candidate")
    assert (green["energy_management_certified"] == "true").all()
    assert (green["major_violation"] == "false").all()
    typical = ent.filter(pl.col("design") != "green_candidate")
    assert set(typical["major_violation"].to_list()) == {"true", "false", ""}  # some undeclared
    assert ((ent["above_scale"] == "true") == (ent["enterprise_id"].is_in(
        fleet.sim_enterprises.filter(pl.col("annual_output_10k_yuan") >= 2000)["enterprise_id"]
        .implode()))).all()  # fmt: skip
    # new firms: production started in 2024, statistics only from then on
    new = ent.filter(pl.col("production_start").str.starts_with("2024"))
    assert 3 <= new.height <= 30
    months = registry.monthly.group_by("enterprise_id").agg(pl.col("month").min().alias("first"))
    first = dict(months.iter_rows())
    for eid, start in new.select("enterprise_id", "production_start").iter_rows():
        assert first[eid] == start
    old = ent.filter(~pl.col("production_start").str.starts_with("2024"))
    assert all(first[e] == "2024-01" for e in old["enterprise_id"])
    assert registry.monthly.filter(pl.col("month").str.starts_with("2025")).height == 300 * 12
    assert registry.monthly.schema["employees"] == pl.Float64


def test_history_keeps_the_prefix_property() -> None:
    small = generate_fleet(8, 9, leader_share=0.2, history_years=2)
    large = generate_fleet(30, 9, leader_share=0.2, history_years=2)
    ids = small.enterprises["enterprise_id"].implode()
    assert small.monthly.equals(large.monthly.filter(pl.col("enterprise_id").is_in(ids)))
    assert small.enterprises.equals(large.enterprises.filter(pl.col("enterprise_id").is_in(ids)))
