"""The demo's fleet, built on purpose: which enterprises breach, which are green, which goes dark.

This module owns the cast of the demo. On top of the simulator's seeded fleet
(`greenmon.simulators.fleet.generate_fleet`, statistics for the current year and the one
before it, a share of "green leaders"), it makes the designs unmistakable:

- every ``quota_breach`` enterprise gets a quota of `BREACH_QUOTA_RATIO` of its double-control
  consumption (`with_breach_quotas`: of last year's, from the ground truth, when the demo
  writes a history; else of its design) — the simulator draws 0.80 to 0.95 of the design,
  which can land on the yellow side of the red line: on its year-to-date pace it is projected
  about 25% over, so the double-control rule judges it red;
- the ``green_leader`` enterprises (intensity 0.30-0.40 of their industry's, twice the output
  per mu, rooftop PV, every requirement declared) are the green-factory material screening
  should put on top;
- the counted meters (boundary, generation, export) declare an hourly nominal interval
  (``interval_s``): their history is hourly, so an hour covered by one reading is complete
  (the live stream reads registers every 15 minutes all the same; PV loggers report hourly);
- one typical enterprise's main gateway goes silent (`outage_gateway`) from noon of the day
  before the demo's end: its meters are silent, and that day's completeness is about half.

`fleet_for_demo` writes it where the demo keeps it (``.greenmon/run/demo/fleet``); the
gateway guide's examples (docs/gateways.md) name its first enterprise's meters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import polars as pl

from greenmon.simulators.fleet import Fleet, generate_fleet, write_fleet

__all__ = [
    "BREACH_QUOTA_RATIO",
    "LEADER_SHARE",
    "Cast",
    "cast_of",
    "demo_fleet",
    "double_control_tce",
    "fleet_for_demo",
    "with_breach_quotas",
]

#: quota / designed consumption of the enterprises built to breach (simulation assumption)
BREACH_QUOTA_RATIO: Final = 0.8
#: probability that an enterprise is a green leader (about 6 in 60 at seed 7: 3)
LEADER_SHARE: Final = 0.1
#: the meters counted in consumption (sub-meters are breakdown only) and their nominal interval
COUNTED_ROLES: Final = ("boundary", "generation", "export")
HOURLY_S: Final = 3600
DEFAULT_ENTERPRISES: Final = 60
DEFAULT_SEED: Final = 7


@dataclass(frozen=True)
class Cast:
    """Who plays what: enterprise ids by design, and the gateway that goes silent."""

    breach: tuple[str, ...]
    leaders: tuple[str, ...]
    candidates: tuple[str, ...]
    outage_enterprise: str | None
    outage_gateway: str | None


def demo_fleet(enterprises: int, seed: int, year: int) -> Fleet:
    """The simulator's fleet for `year` (with the year before's statistics), breaches made
    unmistakable."""
    fleet = generate_fleet(enterprises, seed, year=year, leader_share=LEADER_SHARE, history_years=1)
    sim = fleet.sim_enterprises
    breach = pl.col("design") == "quota_breach"
    quota = sim.select(
        "enterprise_id",
        pl.when(breach)
        .then(((pl.col("designed_tce") * BREACH_QUOTA_RATIO) / 10).round(0).clip(1) * 10)
        .otherwise(None)
        .alias("demo_quota"),
    )
    ents = (
        fleet.enterprises.join(quota, on="enterprise_id", how="left")
        .with_columns(pl.coalesce("demo_quota", "annual_quota_tce").alias("annual_quota_tce"))
        .drop("demo_quota")
    )
    sim = sim.with_columns(
        pl.when(breach)
        .then(pl.lit(BREACH_QUOTA_RATIO))
        .otherwise(pl.col("quota_ratio"))
        .alias("quota_ratio")
    )
    # The counted meters report at least hourly (their history is hourly): a reading covers
    # up to an hour before it, so an hourly day is complete (aggregator/windows.py).
    meters = fleet.meters.with_columns(
        pl.when(pl.col("role").is_in(COUNTED_ROLES))
        .then(pl.lit(HOURLY_S, pl.Int64))
        .otherwise(pl.col("interval_s"))
        .alias("interval_s")
    )
    return Fleet(
        enterprises=ents,
        meters=meters,
        monthly=fleet.monthly,
        gateways=fleet.gateways,
        sim_meters=fleet.sim_meters,
        sim_enterprises=sim,
        meta={**fleet.meta, "demo": {"breach_quota_ratio": BREACH_QUOTA_RATIO}},
    )


def with_breach_quotas(fleet: Fleet, used_tce: dict[str, float]) -> Fleet:
    """`fleet` with each ``quota_breach`` enterprise's quota at `BREACH_QUOTA_RATIO` of the
    double-control consumption it truly had (`used_tce`, e.g. last year's from the ground
    truth): the designed consumption also holds raw-material feedstock and the electricity
    its own PV covers, which double control leaves out."""
    breach = set(fleet.sim_enterprises.filter(pl.col("design") == "quota_breach")["enterprise_id"])
    quotas = {
        e: max(10.0, round(used_tce[e] * BREACH_QUOTA_RATIO, -1))
        for e in breach
        if used_tce.get(e, 0.0) > 0
    }
    if not quotas:
        return fleet
    ents = fleet.enterprises.with_columns(
        pl.col("enterprise_id")
        .replace_strict(quotas, default=None, return_dtype=pl.Float64)
        .fill_null(pl.col("annual_quota_tce"))
        .alias("annual_quota_tce")
    )
    return Fleet(
        enterprises=ents,
        meters=fleet.meters,
        monthly=fleet.monthly,
        gateways=fleet.gateways,
        sim_meters=fleet.sim_meters,
        sim_enterprises=fleet.sim_enterprises,
        meta=fleet.meta,
    )


def double_control_tce(fleet: Fleet, truth: pl.DataFrame) -> dict[str, float]:
    """Per enterprise, the double-control tce of `truth` rows (meter_id, quantity): boundary
    meters that are not raw material (PV consumed on site never crosses the boundary),
    converted with the simulator's coefficients."""
    from greenmon.simulators.params import load_params

    k = load_params().kgce_per_unit
    meters = fleet.meters.filter(
        (pl.col("role") == "boundary") & (pl.col("raw_material").fill_null("") != "true")
    ).select(
        "meter_id",
        "enterprise_id",
        pl.struct("carrier", "unit")
        .map_elements(lambda cu: k[(cu["carrier"], cu["unit"])], return_dtype=pl.Float64)
        .alias("kgce_per_unit"),
    )
    used = (
        truth.select("meter_id", "quantity")
        .join(meters, on="meter_id")
        .group_by("enterprise_id")
        .agg((pl.col("quantity") * pl.col("kgce_per_unit")).sum() / 1000)
    )
    return {str(e): float(v) for e, v in used.iter_rows()}


def cast_of(fleet: Fleet) -> Cast:
    """The designs of `fleet`, and its outage gateway: the main gateway of the first typical
    enterprise after E…1 (whose meters the gateway guide's examples use)."""
    sim = fleet.sim_enterprises

    def ids(design: str) -> tuple[str, ...]:
        return tuple(sim.filter(pl.col("design") == design)["enterprise_id"].to_list())

    typical = [e for e in ids("typical") if e != sim["enterprise_id"][0]]
    outage_ent = typical[0] if typical else None
    outage_gw = None
    if outage_ent is not None:
        gws = fleet.gateways.filter(pl.col("enterprise_id") == outage_ent)["gateway_id"]
        outage_gw = sorted(gws.to_list())[0]
    return Cast(
        breach=ids("quota_breach"),
        leaders=ids("green_leader"),
        candidates=ids("green_candidate"),
        outage_enterprise=outage_ent,
        outage_gateway=outage_gw,
    )


def fleet_for_demo(
    directory: Path,
    enterprises: int = DEFAULT_ENTERPRISES,
    seed: int = DEFAULT_SEED,
    year: int | None = None,
) -> Fleet:
    """Write the demo's fleet (registry and simulation files) into `directory`; return it.
    `year`: the current year unless given."""
    from datetime import date

    fleet = demo_fleet(enterprises, seed, year or date.today().year)
    write_fleet(fleet, directory, overwrite=True)
    return fleet
