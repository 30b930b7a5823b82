"""The fleet generator: a seeded set of Nantong factories, written as a greenmon registry.

This module owns *who* the simulated factories are and which meters they have. From a number of
enterprises and a seed it draws, per enterprise (each from its own random stream, so a fleet of
10 is exactly the first 10 of a fleet of 1,000 with the same seed):

- a cluster, a GB/T 4754 industry class, a county/district (clusters lean to their usual
  places), a fictitious name, land area, output value, an energy intensity around the
  industry's typical value and a shift pattern; a deliberate spread: about 15% are efficient
  green-factory candidates, about 15% get a quota below what they will use;
- boundary meters for the carriers its industry uses (electricity always), sub-meters under
  them, on-site PV with an export meter for some, a raw-material gas meter for chemical firms;
  CT multipliers, register digits and rollovers that fit each meter's consumption;
- gateways (one for the boundary meters, one for sub-meters when there are many, one PV
  logger) with their habits: batch or single payloads, RFC 3339 or epoch-ms timestamps,
  unit sent, omitted or scaled;
- 12 months of output value, value added, sales, tax and product output, consistent with the
  shift pattern's calendar (and, with `history_years`, the same statistics for earlier years);
  average headcount and R&D spending per month;
- declared attributes (``energy_management_certified``, ``major_violation``,
  ``green_factory_level``, ``above_scale``, ``production_start``; see the registry's
  ``DECLARED_FLAGS``), drawn so that green candidates declare what a green factory must and a
  few typical firms do not; about 5% of typical firms started production less than two years
  before the end of `year` (no statistics before their start);
- optionally (`leader_share`), "green leaders": clearly green-factory material — intensity
  0.30-0.40 of the industry's typical value, twice the usual output per mu, rooftop PV for about
  30% of their electricity, every requirement declared — so that screening has known answers.

Draws that came later (declared attributes, leaders, history) use random streams of their own,
so a fleet without leaders is, value for value, the fleet earlier versions generated.

`write_fleet` writes the registry (``enterprises.csv``, ``meters.csv``, ``monthly.csv``, which
`greenmon.registry.load_registry` accepts) plus what only the simulator needs:
``gateways.csv`` (``enterprise_id,gateway_id`` first, the format `greenmon.deploy.broker_auth`
reads for broker ACLs), ``simulation_meters.csv``, ``simulation_enterprises.csv`` and
``fleet.json``. `load_fleet` reads them back. Same seed, same bytes.

Register meters show whole display units (``rollover = 10**digits - 1``), so a wrap adds exactly
``rollover + 1`` display units, as the aggregator assumes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from greenmon.registry import (
    ENTERPRISE_COLUMNS,
    ENTERPRISES_FILE,
    METER_COLUMNS,
    METERS_FILE,
    MONTHLY_FILE,
)
from greenmon.simulators.errors import FleetError
from greenmon.simulators.params import (
    CARRIER_CODES,
    CLUSTERS,
    FUEL_CARRIERS,
    PATTERNS,
    Params,
    load_params,
)
from greenmon.simulators.profiles import activity, calendar, day_number

__all__ = [
    "FLEET_FORMAT",
    "GATEWAYS_FILE",
    "MAX_ENTERPRISES",
    "SIM_ENTERPRISES_FILE",
    "SIM_METERS_FILE",
    "Fleet",
    "generate_fleet",
    "load_fleet",
    "write_fleet",
]

FLEET_FORMAT: Final = 2
GATEWAYS_FILE: Final = "gateways.csv"
SIM_METERS_FILE: Final = "simulation_meters.csv"
SIM_ENTERPRISES_FILE: Final = "simulation_enterprises.csv"
META_FILE: Final = "fleet.json"
MAX_ENTERPRISES: Final = 99_999
_STREAM_ENTERPRISE: Final = 1  # SeedSequence spawn keys: (purpose, index)
_STREAM_LEADER: Final = 2
_STREAM_DECLARED: Final = 3
_STREAM_HISTORY: Final = 4
#: Share of typical firms that started production less than two years before the fleet's year
#: ends, and the 规上 (above designated size) output threshold in 10k yuan (20 million yuan).
NEW_FIRM_SHARE: Final = 0.05
ABOVE_SCALE_OUTPUT_10K_YUAN: Final = 2000.0
CT_RATIOS: Final = (
    1,
    2,
    5,
    10,
    20,
    30,
    40,
    50,
    60,
    80,
    100,
    120,
    150,
    200,
    300,
    400,
    500,
    600,
    800,
)
_WHOLE_UNITS: Final = frozenset({"艘", "座", "台"})
_GREEN_LABELS: Final = ("ISO 50001", "ISO 14001", "省级绿色工厂")

# The registry's own column lists (core/registry.py), plus the optional columns a fleet has.
REGISTRY_ENTERPRISE_COLUMNS: Final = (
    *ENTERPRISE_COLUMNS,
    "green_attributes",
    "key_energy_user",
    "latitude",
    "longitude",
    "energy_management_certified",
    "major_violation",
    "green_factory_level",
    "above_scale",
    "production_start",
)
REGISTRY_METER_COLUMNS: Final = (*METER_COLUMNS, "interval_s")
GATEWAY_COLUMNS: Final = (
    "enterprise_id",
    "gateway_id",
    "payload_form",
    "ts_format",
    "unit_mode",
    "latency_ms",
)
SIM_METER_COLUMNS: Final = (
    "meter_id",
    "enterprise_id",
    "gateway_id",
    "meter_type",
    "source",
    "parent_meter_id",
    "pattern",
    "annual_quantity",
    "sub_weight",
    "noise_sigma",
    "cooling",
    "heating",
    "decimals",
    "register_start",
    "pv_kwp",
)
SIM_ENTERPRISE_COLUMNS: Final = (
    "enterprise_id",
    "cluster",
    "industry",
    "pattern",
    "design",
    "efficiency",
    "designed_tce",
    "quota_ratio",
    "annual_output_10k_yuan",
    "pv_kwp",
)


@dataclass(frozen=True)
class Fleet:
    """A generated (or re-read) fleet: the registry frames plus the simulator's own tables.

    ``meters`` and ``sim_meters`` have the same rows in the same order (by enterprise, then
    gateway-friendly meter order); ``meta`` holds ``seed``, ``year``, ``enterprises`` and
    ``format``.
    """

    enterprises: pl.DataFrame
    meters: pl.DataFrame
    monthly: pl.DataFrame
    gateways: pl.DataFrame
    sim_meters: pl.DataFrame
    sim_enterprises: pl.DataFrame
    meta: dict[str, Any]


# --------------------------------------------------------------------------- generation


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _pick(rng: np.random.Generator, options: Sequence[Any], weights: Sequence[float]) -> Any:
    w = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=w / w.sum()))]


def _round_sig(x: float, digits: int = 3) -> float:
    if x <= 0:
        return 0.0
    return float(np.round(x, digits - 1 - int(np.floor(np.log10(x)))))


def _digits_for(annual_counts: float) -> int:
    """Register digits: room for about 20 years of counting, 6 to 10 digits."""
    need = max(annual_counts, 1.0) * 20
    return int(min(10, max(6, int(np.ceil(np.log10(need))))))


def _multiplier_for(carrier: str, annual_quantity: float, per_interval: float) -> int:
    if carrier != "electricity":
        return 1
    typical = annual_quantity / (365 * 96)
    fitting = [r for r in CT_RATIOS if typical / r >= per_interval]
    return max(fitting) if fitting else 1


class _Month:
    """Per pattern, the share of each month in the year's activity (for monthly output)."""

    def __init__(self, year: int) -> None:
        first = day_number(date(year, 1, 1))
        n = day_number(date(year + 1, 1, 1)) - first
        cal = calendar(first, n)
        epoch = date(1970, 1, 1).toordinal()
        months = np.array([date.fromordinal(int(d) + epoch).month for d in cal.days])
        self.shares: dict[str, np.ndarray] = {}
        for pattern in PATTERNS:
            act = 0.3 + 0.7 * activity(pattern, cal)  # overheads keep some output going
            per_month = np.array([act[months == m].sum() for m in range(1, 13)])
            self.shares[pattern] = per_month / per_month.sum()


def generate_fleet(
    n_enterprises: int,
    seed: int,
    *,
    year: int = 2025,
    leader_share: float = 0.0,
    history_years: int = 0,
) -> Fleet:
    """Draw a fleet of `n_enterprises` (1 to 99,999) from `seed` for calendar `year`.

    `leader_share`: the probability that an enterprise is a green leader (0 to 0.5);
    `history_years`: earlier years of monthly statistics (0 to 5), e.g. 1 for the
    resource-efficiency classes, whose benchmark is the previous year's county average.
    """
    if not 1 <= n_enterprises <= MAX_ENTERPRISES:
        raise FleetError(
            f"--enterprises must be between 1 and {MAX_ENTERPRISES}, got {n_enterprises}"
        )
    if seed < 0:
        raise FleetError(f"--seed must be >= 0, got {seed}")
    if not 0.0 <= leader_share <= 0.5:
        raise FleetError(f"--green-leaders must be between 0 and 0.5, got {leader_share:g}")
    if not 0 <= history_years <= 5:
        raise FleetError(f"--history-years must be between 0 and 5, got {history_years}")
    p = load_params()
    width = max(4, len(str(n_enterprises)))
    months = _Month(year)
    history = [(y, _Month(y)) for y in range(year - history_years, year)]
    rows: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("ent", "met", "mon", "gw", "sim", "sime")
    }
    names_used: dict[str, int] = {}
    for i in range(n_enterprises):
        eid = f"E{i + 1:0{width}d}"
        lead_rng = _rng(seed, _STREAM_LEADER, i)
        leader = lead_rng if leader_share > 0 and lead_rng.random() < leader_share else None
        _enterprise(
            p, _rng(seed, _STREAM_ENTERPRISE, i), eid, year, months, names_used, rows, leader
        )
        _declared_and_history(
            _rng(seed, _STREAM_DECLARED, i), _rng(seed, _STREAM_HISTORY, i), months, history, rows
        )
    meters = pl.DataFrame(rows["met"], schema=_METER_SCHEMA, orient="row")
    return Fleet(
        enterprises=pl.DataFrame(rows["ent"], schema=_ENTERPRISE_SCHEMA, orient="row"),
        meters=meters,
        monthly=pl.DataFrame(rows["mon"], schema=_MONTHLY_SCHEMA, orient="row"),
        gateways=pl.DataFrame(rows["gw"], schema=_GATEWAY_SCHEMA, orient="row"),
        sim_meters=pl.DataFrame(rows["sim"], schema=_SIM_METER_SCHEMA, orient="row"),
        sim_enterprises=pl.DataFrame(rows["sime"], schema=_SIM_ENTERPRISE_SCHEMA, orient="row"),
        meta={
            "format": FLEET_FORMAT,
            "seed": seed,
            "year": year,
            "enterprises": n_enterprises,
            "leader_share": leader_share,
            "history_years": history_years,
        },
    )


def _enterprise(
    p: Params,
    rng: np.random.Generator,
    eid: str,
    year: int,
    months: _Month,
    names_used: dict[str, int],
    rows: dict[str, list[dict[str, Any]]],
    leader: np.random.Generator | None = None,
) -> None:
    c = p.const
    tables = _tables()
    cluster = _pick(rng, CLUSTERS, tables.cluster_weights)
    inds = tables.industries[cluster]
    ind = _pick(rng, inds, [row["weight"] for row in inds])
    county = _pick(rng, tables.counties, [row[cluster] for row in tables.counties])
    pattern = _pick(rng, PATTERNS, [ind[k] for k in PATTERNS])

    # Name: county + two trade-name characters + a trade word; a repeat gets a plant number.
    first, second = p.names["first"], p.names["second"]
    trade = first[int(rng.integers(len(first)))] + second[int(rng.integers(len(second)))]
    words = p.names[cluster]
    place = county["short"] if county["short"].startswith("南通") else "南通" + county["short"]
    base_name = f"{place}{trade}{words[int(rng.integers(len(words)))]}有限公司"
    seen = names_used.get(base_name, 0)
    names_used[base_name] = seen + 1
    name = base_name if seen == 0 else f"{base_name}（{_cn_number(seen + 1)}厂）"

    land = max(5.0, float(np.round(ind["land_mu_median"] * rng.lognormal(0, c("land_sigma")), 1)))
    output = land * ind["output_per_mu_10k_yuan"] * rng.lognormal(0, c("output_sigma"))
    if leader is not None:  # the same output on about half the land: twice the output per mu
        land = max(5.0, float(np.round(land / leader.uniform(1.8, 2.2), 1)))
    design_draw = rng.random()
    if leader is not None:
        design = "green_leader"
        efficiency = leader.uniform(0.30, 0.40)
        quota_ratio = leader.uniform(c("headroom_low"), c("headroom_high"))
    elif design_draw < c("green_share"):
        design = "green_candidate"
        efficiency = rng.uniform(c("green_low"), c("green_high"))
        quota_ratio = rng.uniform(c("headroom_low"), c("headroom_high"))
    else:
        efficiency = float(np.clip(rng.lognormal(0, c("efficiency_sigma")), 0.75, 2.0))
        if design_draw < c("green_share") + c("breach_share"):
            design = "quota_breach"
            quota_ratio = rng.uniform(c("breach_low"), c("breach_high"))
        else:
            design = "typical"
            quota_ratio = rng.uniform(c("headroom_low"), c("headroom_high"))
    typical = float(ind["intensity_tce_per_10k_yuan"])
    designed_tce = output * typical * efficiency
    quota = max(10.0, float(np.round(designed_tce * quota_ratio, -1)))

    # Carriers: shares of the energy (kgce); small shares are optional and go to electricity.
    shares = {k: float(ind[k]) for k in FUEL_CARRIERS}
    for k in FUEL_CARRIERS[1:]:
        if 0 < shares[k] < 0.15 and rng.random() >= c("optional_carrier_probability"):
            shares["electricity"] += shares[k]
            shares[k] = 0.0
    raw_share = float(ind["raw_material_gas"])
    energy_kgce = designed_tce * 1000 * (1 - raw_share)
    has_pv = rng.random() < ind["pv_probability"]
    pv_kwp = 0.0
    el_annual = shares["electricity"] * energy_kgce / p.kgce_per_unit[("electricity", "kWh")]
    if leader is not None:  # rooftop PV for about 30% of the electricity
        pv_kwp = _round_sig(max(10.0, 0.3 * el_annual / c("pv_yield_kwh_per_kwp")), 3)
        has_pv = True
    elif has_pv:
        pv_kwp = land * c("pv_kwp_per_mu") * rng.lognormal(0, c("pv_sigma"))
        pv_kwp = min(pv_kwp, 0.6 * el_annual / c("pv_yield_kwh_per_kwp"))  # at most 60% solar
        pv_kwp = _round_sig(pv_kwp, 3)
        has_pv = pv_kwp >= 10
        pv_kwp = pv_kwp if has_pv else 0.0

    gw_main, gw_sub, gw_pv = f"{eid}-GW01", f"{eid}-GW02", f"{eid}-PV01"
    meters: list[tuple[dict[str, Any], dict[str, Any]]] = []
    per_interval = c("counts_per_interval")

    def add_meter(
        meter_id: str,
        meter_type: str,
        role: str,
        annual: float,
        *,
        gateway: str = gw_main,
        source: str = "load",
        parent: str | None = None,
        raw_material: bool = False,
        sub_weight: float | None = None,
        carrier_for_ct: str | None = None,
    ) -> None:
        mt = p.meter_type(meter_type)
        carrier, unit, kind = str(mt["carrier"]), str(mt["unit"]), str(mt["kind"])
        multiplier: int | None = None
        rollover: int | None = None
        start: int | None = None
        if kind == "register":
            multiplier = _multiplier_for(carrier_for_ct or carrier, annual, per_interval)
            digits = _digits_for(annual / multiplier)
            rollover = 10**digits - 1
            start = int(rng.integers(int(0.02 * rollover), int(0.45 * rollover)))
        meters.append(
            (
                {
                    "meter_id": meter_id,
                    "enterprise_id": eid,
                    "carrier": carrier,
                    "unit": unit,
                    "kind": kind,
                    "multiplier": multiplier,
                    "rollover": rollover,
                    "role": role,
                    "raw_material": "true" if raw_material else "false",
                    "interval_s": mt["interval_s"] if kind == "interval" else None,
                },
                {
                    "meter_id": meter_id,
                    "enterprise_id": eid,
                    "gateway_id": gateway,
                    "meter_type": meter_type,
                    "source": source,
                    "parent_meter_id": parent,
                    "pattern": pattern if meter_type != "raw_material_gas" else "continuous",
                    "annual_quantity": _round_sig(annual, 6),
                    "sub_weight": sub_weight,
                    "noise_sigma": float(mt["noise_sigma"]),
                    "cooling": float(mt["cooling"]),
                    "heating": float(mt["heating"]),
                    "decimals": int(mt["decimals"]),
                    "register_start": start,
                    "pv_kwp": pv_kwp if meter_type == "pv" else None,
                },
            )
        )

    subs: list[tuple[str, str, float, int]] = []  # (parent id, meter type, annual, n)
    for carrier in FUEL_CARRIERS:
        if shares[carrier] <= 0:
            continue
        code = CARRIER_CODES[carrier]
        coef = p.kgce_per_unit[(carrier, str(p.meter_type(carrier)["unit"]))]
        annual = shares[carrier] * energy_kgce / coef
        main_id = f"{eid}-{code}-MAIN"
        source = "import" if carrier == "electricity" and has_pv else "load"
        add_meter(main_id, carrier, "boundary", annual, source=source)
        if carrier == "electricity":
            n_sub = int(rng.integers(2, 10))
        elif carrier in ("steam", "natural_gas"):
            n_sub = int(rng.integers(0, 3))
        else:
            n_sub = 0
        if n_sub:
            subs.append((main_id, carrier, annual, n_sub))
    if has_pv:
        add_meter(
            f"{eid}-EL-EXP",
            "electricity",
            "export",
            0.05 * pv_kwp * c("pv_yield_kwh_per_kwp"),
            source="export",
            parent=f"{eid}-EL-MAIN",
        )
    if raw_share > 0:
        coef = p.kgce_per_unit[("natural_gas", "m3")]
        add_meter(
            f"{eid}-NG-FEED",
            "raw_material_gas",
            "boundary",
            designed_tce * 1000 * raw_share / coef,
            raw_material=True,
        )
    n_subs_total = sum(s[3] for s in subs)
    for parent, carrier, annual, n_sub in subs:
        code = CARRIER_CODES[carrier]
        total = rng.uniform(c("sub_share_low"), c("sub_share_high"))
        weights = rng.dirichlet(np.full(n_sub, 2.0)) * total
        for j, w in enumerate(weights):
            add_meter(
                f"{eid}-{code}-S{j + 1:02d}",
                carrier,
                "sub",
                annual * float(w),
                gateway=gw_sub if n_subs_total >= 4 else gw_main,
                source="sub",
                parent=parent,
                sub_weight=float(np.round(w, 6)),
            )
    if has_pv:
        add_meter(
            f"{eid}-PV-01",
            "pv",
            "generation",
            pv_kwp * c("pv_yield_kwh_per_kwp"),
            gateway=gw_pv,
            source="pv",
        )

    gateways_used = sorted({sim["gateway_id"] for _reg, sim in meters})
    for gw in gateways_used:
        n_gw_meters = sum(1 for _reg, sim in meters if sim["gateway_id"] == gw)
        single = n_gw_meters <= 3 and rng.random() < c("single_form_share") * 3
        u = rng.random()
        unit_mode = (
            "omitted"
            if u < c("unit_omitted_share")
            else "scaled"
            if u < c("unit_omitted_share") + c("unit_scaled_share")
            else "registered"
        )
        rows["gw"].append(
            {
                "enterprise_id": eid,
                "gateway_id": gw,
                "payload_form": "single" if single else "batch",
                "ts_format": "epoch_ms" if rng.random() < c("epoch_ms_share") else "rfc3339",
                "unit_mode": unit_mode,
                "latency_ms": int(
                    rng.integers(int(c("latency_low_s") * 1000), int(c("latency_high_s") * 1000))
                ),
            }
        )
    for reg, sim in meters:
        rows["met"].append(reg)
        rows["sim"].append(sim)

    green = ""
    if design in ("green_candidate", "green_leader"):
        labels = list(_GREEN_LABELS[:2]) + ([_GREEN_LABELS[2]] if rng.random() < 0.4 else [])
        green = ";".join(labels)
    elif rng.random() < 0.3:
        green = _GREEN_LABELS[int(rng.integers(2))]
    rows["ent"].append(
        {
            "enterprise_id": eid,
            "name": name,
            "county": county["county"],
            "industry": ind["code"],
            "land_area_mu": land,
            "annual_quota_tce": quota,
            "intensity_target_tce_per_10k_yuan": _round_sig(typical * rng.uniform(0.9, 1.1), 3),
            "green_attributes": green,
            "key_energy_user": "true" if designed_tce >= c("key_energy_user_tce") else "false",
            # The county's approximate centroid (counties.csv) plus up to ±0.04° (about 4 km)
            # so that plants do not sit on one point: a map position, not a survey.
            "latitude": float(np.round(county["lat"] + rng.uniform(-0.04, 0.04), 4)),
            "longitude": float(np.round(county["lon"] + rng.uniform(-0.04, 0.04), 4)),
        }
    )
    rows["sime"].append(
        {
            "enterprise_id": eid,
            "cluster": cluster,
            "industry": ind["code"],
            "pattern": pattern,
            "design": design,
            "efficiency": float(np.round(efficiency, 4)),
            "designed_tce": _round_sig(designed_tce, 6),
            "quota_ratio": float(np.round(quota_ratio, 4)),
            "annual_output_10k_yuan": float(np.round(output, 1)),
            "pv_kwp": pv_kwp,
        }
    )
    whole = ind["product_unit"] in _WHOLE_UNITS
    for m, share in enumerate(months.shares[pattern], start=1):
        value = output * float(share) * rng.lognormal(0, 0.04)
        product = value / ind["unit_price_10k_yuan"] * rng.uniform(0.95, 1.05)
        rows["mon"].append(
            {
                "enterprise_id": eid,
                "month": f"{year}-{m:02d}",
                "output_value_10k_yuan": float(np.round(value, 1)),
                "value_added_10k_yuan": float(
                    np.round(value * ind["va_ratio"] * rng.uniform(0.9, 1.1), 1)
                ),
                "sales_10k_yuan": float(np.round(value * rng.uniform(0.93, 1.03), 1)),
                "tax_10k_yuan": float(
                    np.round(value * ind["tax_ratio"] * rng.uniform(0.8, 1.2), 1)
                ),
                "product_output": float(np.round(product, 0 if whole else 1)),
                "product_unit": ind["product_unit"],
            }
        )


def _flag(value: bool | None) -> str:
    return "" if value is None else ("true" if value else "false")


def _declared_and_history(
    rng: np.random.Generator,
    history_rng: np.random.Generator,
    months_now: _Month,
    history: list[tuple[int, _Month]],
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    """Declared attributes, headcount and R&D of the enterprise `_enterprise` just added, and
    its statistics for the `history` years (inserted before its current-year months)."""
    ent, sime = rows["ent"][-1], rows["sime"][-1]
    year = int(rows["mon"][-1]["month"][:4])
    design = sime["design"]
    output = float(sime["annual_output_10k_yuan"])
    labels = ent["green_attributes"].split(";") if ent["green_attributes"] else []
    green = design in ("green_candidate", "green_leader")
    u_cert, u_violation, u_level, u_new, u_age, u_month = rng.random(6)
    if "ISO 50001" in labels:
        certified: bool | None = True
    else:
        certified = None if u_cert < 0.3 else False
    if green:
        violation: bool | None = False
    else:
        violation = True if u_violation < 0.04 else (None if u_violation < 0.15 else False)
    level = "provincial" if "省级绿色工厂" in labels else ("" if u_level < 0.2 else "none")
    new_firm = design == "typical" and u_new < NEW_FIRM_SHARE
    if new_firm:  # started 2 to 12 months into the previous year: under two years by year end
        start_year, start_month = year - 1, 2 + int(u_month * 11)
    else:
        start_year, start_month = year - 3 - int(u_age * 22), 1 + int(u_month * 12)
    ent.update(
        {
            "energy_management_certified": _flag(certified),
            "major_violation": _flag(violation),
            "green_factory_level": level,
            "above_scale": _flag(output >= ABOVE_SCALE_OUTPUT_10K_YUAN),
            "production_start": f"{start_year}-{start_month:02d}",
        }
    )
    headcount = max(5.0, float(np.round(output / rng.uniform(80.0, 250.0))))
    rd_share = rng.uniform(0.005, 0.04)
    current = rows["mon"][-12:]
    for row in current:
        row["employees"] = headcount
        row["rd_expense_10k_yuan"] = float(np.round(row["sales_10k_yuan"] * rd_share, 1))
    earlier: list[dict[str, Any]] = []
    growth = 1.0
    for hist_year, months in reversed(history):  # newest first: each year a little smaller
        growth /= history_rng.uniform(1.0, 1.12)
        now = months_now.shares[sime["pattern"]]
        for m, share in enumerate(months.shares[sime["pattern"]], start=1):
            if (hist_year, m) < (start_year, start_month):
                continue
            ratio = growth * float(share) / float(now[m - 1])
            template = current[m - 1]
            noise = history_rng.lognormal(0, 0.04, 5)
            row = {
                "enterprise_id": template["enterprise_id"],
                "month": f"{hist_year}-{m:02d}",
                **{
                    key: float(np.round(float(template[key]) * ratio * n, digits))
                    for (key, digits), n in zip(
                        (
                            ("output_value_10k_yuan", 1),
                            ("value_added_10k_yuan", 1),
                            ("sales_10k_yuan", 1),
                            ("tax_10k_yuan", 1),
                            ("product_output", 1),
                        ),
                        noise,
                        strict=True,
                    )
                },
                "product_unit": template["product_unit"],
                "employees": float(np.round(headcount * growth**0.5)),
                "rd_expense_10k_yuan": float(
                    np.round(float(template["sales_10k_yuan"]) * ratio * rd_share, 1)
                ),
            }
            if template["product_unit"] in _WHOLE_UNITS:
                row["product_output"] = float(np.round(row["product_output"]))
            earlier.append(row)
    earlier.sort(key=lambda r: r["month"])
    rows["mon"][-12:] = earlier + current


@dataclass(frozen=True)
class _Tables:
    cluster_weights: list[float]
    industries: dict[str, list[dict[str, Any]]]
    counties: list[dict[str, Any]]


@cache
def _tables() -> _Tables:
    p = load_params()
    weights = dict(p.clusters.select("cluster", "weight").iter_rows())
    return _Tables(
        cluster_weights=[float(weights[c]) for c in CLUSTERS],
        industries={c: p.industries.filter(pl.col("cluster") == c).to_dicts() for c in CLUSTERS},
        counties=p.counties.to_dicts(),
    )


def _cn_number(n: int) -> str:
    digits = "零一二三四五六七八九"
    if n < 10:
        return digits[n]
    tens, ones = divmod(n, 10)
    return (digits[tens] if tens > 1 else "") + "十" + (digits[ones] if ones else "")


# --------------------------------------------------------------------------- schemas, I/O

_ENTERPRISE_SCHEMA: Final = {
    "enterprise_id": pl.String,
    "name": pl.String,
    "county": pl.String,
    "industry": pl.String,
    "land_area_mu": pl.Float64,
    "annual_quota_tce": pl.Float64,
    "intensity_target_tce_per_10k_yuan": pl.Float64,
    "green_attributes": pl.String,
    "key_energy_user": pl.String,
    "latitude": pl.Float64,
    "longitude": pl.Float64,
    "energy_management_certified": pl.String,
    "major_violation": pl.String,
    "green_factory_level": pl.String,
    "above_scale": pl.String,
    "production_start": pl.String,
}
_METER_SCHEMA: Final = {
    "meter_id": pl.String,
    "enterprise_id": pl.String,
    "carrier": pl.String,
    "unit": pl.String,
    "kind": pl.String,
    "multiplier": pl.Int64,
    "rollover": pl.Int64,
    "role": pl.String,
    "raw_material": pl.String,
    "interval_s": pl.Int64,
}
_MONTHLY_SCHEMA: Final = {
    "enterprise_id": pl.String,
    "month": pl.String,
    "output_value_10k_yuan": pl.Float64,
    "value_added_10k_yuan": pl.Float64,
    "sales_10k_yuan": pl.Float64,
    "tax_10k_yuan": pl.Float64,
    "product_output": pl.Float64,
    "product_unit": pl.String,
    "employees": pl.Float64,
    "rd_expense_10k_yuan": pl.Float64,
}
_GATEWAY_SCHEMA: Final = {
    "enterprise_id": pl.String,
    "gateway_id": pl.String,
    "payload_form": pl.String,
    "ts_format": pl.String,
    "unit_mode": pl.String,
    "latency_ms": pl.Int64,
}
_SIM_METER_SCHEMA: Final = {
    "meter_id": pl.String,
    "enterprise_id": pl.String,
    "gateway_id": pl.String,
    "meter_type": pl.String,
    "source": pl.String,
    "parent_meter_id": pl.String,
    "pattern": pl.String,
    "annual_quantity": pl.Float64,
    "sub_weight": pl.Float64,
    "noise_sigma": pl.Float64,
    "cooling": pl.Float64,
    "heating": pl.Float64,
    "decimals": pl.Int64,
    "register_start": pl.Int64,
    "pv_kwp": pl.Float64,
}
_SIM_ENTERPRISE_SCHEMA: Final = {
    "enterprise_id": pl.String,
    "cluster": pl.String,
    "industry": pl.String,
    "pattern": pl.String,
    "design": pl.String,
    "efficiency": pl.Float64,
    "designed_tce": pl.Float64,
    "quota_ratio": pl.Float64,
    "annual_output_10k_yuan": pl.Float64,
    "pv_kwp": pl.Float64,
}
_FILES: Final = (
    (ENTERPRISES_FILE, "enterprises", _ENTERPRISE_SCHEMA),
    (METERS_FILE, "meters", _METER_SCHEMA),
    (MONTHLY_FILE, "monthly", _MONTHLY_SCHEMA),
    (GATEWAYS_FILE, "gateways", _GATEWAY_SCHEMA),
    (SIM_METERS_FILE, "sim_meters", _SIM_METER_SCHEMA),
    (SIM_ENTERPRISES_FILE, "sim_enterprises", _SIM_ENTERPRISE_SCHEMA),
)


def write_fleet(fleet: Fleet, out: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the fleet into directory `out` (created); refuse to replace an existing fleet or
    registry unless `overwrite` (the very same fleet, byte for byte, is no replacement: running
    the same `simulate fleet` twice succeeds). Returns the files written."""
    out = Path(out)
    contents = {
        name: getattr(fleet, attr).write_csv(float_scientific=False).encode("utf-8")
        for name, attr, _schema in _FILES
    }
    contents[META_FILE] = (json.dumps(fleet.meta, indent=2, sort_keys=True) + "\n").encode()
    existing = [name for name, _a, _s in _FILES if (out / name).exists()]
    if existing and not overwrite and not _holds(out, contents):
        raise FleetError(
            f"{out} already holds {', '.join(existing)}: choose an empty directory or --force"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for name, data in contents.items():
            path = out / name
            path.write_bytes(data)
            written.append(path)
    except OSError as exc:
        raise FleetError(f"cannot write the fleet to {out}: {exc.strerror or exc}") from exc
    return written


def _holds(out: Path, contents: dict[str, bytes]) -> bool:
    """True if every file of `contents` is in `out` with exactly those bytes."""
    try:
        return all((out / name).read_bytes() == data for name, data in contents.items())
    except OSError:
        return False


def load_fleet(root: Path) -> Fleet:
    """Read a fleet written by `write_fleet` (the registry files and the simulator's tables)."""
    root = Path(root)
    missing = [name for name, _a, _s in _FILES if not (root / name).is_file()]
    if not (root / META_FILE).is_file():
        missing.append(META_FILE)
    if missing:
        raise FleetError(
            f"{root} is not a simulator fleet (missing {', '.join(missing)}); "
            "generate one with `greenmon simulate fleet --out DIR`"
        )
    frames: dict[str, pl.DataFrame] = {}
    try:
        for name, attr, schema in _FILES:
            frames[attr] = pl.read_csv(root / name, schema=schema)
        meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise FleetError(f"cannot read the fleet in {root}: {exc}") from exc
    if meta.get("format") != FLEET_FORMAT:
        raise FleetError(f"{root}/{META_FILE}: unsupported fleet format {meta.get('format')!r}")
    if frames["meters"]["meter_id"].to_list() != frames["sim_meters"]["meter_id"].to_list():
        raise FleetError(f"{root}: {METERS_FILE} and {SIM_METERS_FILE} list different meters")
    return Fleet(meta=meta, **frames)
