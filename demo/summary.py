"""The demo's summary: what the chain produced, read back, and checked against the ground truth.

This module owns turning the demo's results into one JSON-able dict: readings ingested and
rejected, energy by county and industry over the live days, intensity against the provincial
reference, the city's live-days total and its year to date against the simulators' truth (the
same roles and coefficients applied to the true consumption), the alert levels with the red
ones and why, the green-factory candidates and the resource-efficiency classes, the plan
indicators, and whether the designed cast came out as designed. It reads; it decides nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.aggregator.energy import ROLE_SIGN
from greenmon.aggregator.reference import meter_factors
from greenmon.influx import InfluxClient

__all__ = ["summarize"]


def _true_kgce(
    truth: pl.DataFrame, factors: pl.DataFrame, start: str = "start", end: str = "end"
) -> float:
    """Σ quantity x kgce per unit x role sign (boundary +, generation +, export -, sub 0)."""
    if truth.height == 0:
        return 0.0
    return float(
        truth.join(factors.select("meter_id", "kgce_per_unit"), on="meter_id", how="left")
        .select(
            (
                pl.col("quantity")
                * pl.col("kgce_per_unit")
                * pl.col("role").replace_strict(ROLE_SIGN, default=0.0)
            ).sum()
        )
        .item()
        or 0.0
    )


def _energy(client: InfluxClient, lo: datetime, hi: datetime) -> pl.DataFrame:
    return client.query(
        'SELECT "kgce", "kgco2" FROM "energy" WHERE "window" = \'1d\' AND '
        f"\"carrier\" = 'total' AND time >= {int(lo.timestamp() * 1000)}ms AND "
        f'time < {int(hi.timestamp() * 1000)}ms GROUP BY "enterprise", "county", "industry"',
        epoch="ms",
    )


def _pct(a: float, b: float) -> float | None:
    return round(100 * (a - b) / b, 4) if b else None


def summarize(
    *,
    client: InfluxClient,
    registry: Any,
    fleet: Any,
    cast: Any,
    truth: pl.DataFrame,
    plan: Any,
    final: Any,
    month: Any,
    refs: Any,
    choice: Any,
    opts: Any,
    ingest: dict[str, Any],
    follow: dict[str, Any],
    watch: list[dict[str, Any]],
    published: int,
    lo: datetime,
    hi: datetime,
    tz: str,
    outage: Any,
    history: dict[str, Any],
    history_truth: pl.DataFrame | None,
    alerts: list[dict[str, Any]],
    screening: dict[str, Any],
    classes: dict[str, Any],
    dashboards: dict[str, Any],
    year: int,
) -> dict[str, Any]:
    zone = ZoneInfo(tz)
    # Energy by county and industry over the live days: read back what was written.
    energy = _energy(client, lo, hi)
    by = {}
    for key in ("county", "industry"):
        by[key] = (
            energy.group_by(key)
            .agg(
                (pl.col("kgce").sum() / 1000).round(3).alias("tce"),
                pl.col("kgco2").sum().round(0).alias("kgco2"),
                pl.col("enterprise").n_unique().alias("enterprises"),
            )
            .sort("tce", descending=True)
            .to_dicts()
            if energy.height
            else []
        )
    city_kgce = float(energy.get_column("kgce").sum()) if energy.height else 0.0

    # Truth over the live days: the true consumption of every interval inside [lo, hi), except
    # what the outage gateway's meters used after their last reading (not reported yet).
    years = sorted({year - 1, year, lo.astimezone(zone).year, hi.astimezone(zone).year})
    all_factors = meter_factors(registry.meters, refs, years, choice)
    factors = all_factors.filter(pl.col("year") == lo.astimezone(zone).year)
    live = truth.filter(pl.col("start").is_not_null() & (pl.col("start") < pl.col("end"))).filter(
        (pl.col("start") >= lo) & (pl.col("end") <= hi)
    )
    unreported_kgce = 0.0
    if outage is not None and outage.last_reading_ms:
        last = pl.DataFrame(
            {
                "meter_id": list(outage.last_reading_ms),
                "last_ms": list(outage.last_reading_ms.values()),
            },
            schema={"meter_id": pl.String, "last_ms": pl.Int64},
        )
        tagged = live.join(last, on="meter_id", how="left").with_columns(
            (
                pl.col("last_ms").is_not_null()
                & (pl.col("start").dt.epoch("ms") >= pl.col("last_ms"))
            ).alias("unreported")
        )
        unreported_kgce = _true_kgce(tagged.filter("unreported"), factors)
        live = tagged.filter(~pl.col("unreported"))
    true_kgce = _true_kgce(live, factors)

    # Year to date: Jan 1 (local) to the end of the live days, history truth + live truth.
    ytd: dict[str, Any] | None = None
    jan1 = datetime(year, 1, 1, tzinfo=zone)
    if history_truth is not None:
        jan1_ms, lo_ms = int(jan1.timestamp() * 1000), int(lo.timestamp() * 1000)
        hist = history_truth.filter((pl.col("start_ms") >= jan1_ms) & (pl.col("end_ms") <= lo_ms))
        this_year = all_factors.filter(pl.col("year") == year)
        # the live days may begin last year (a demo run in the first days of January)
        live_kgce = _true_kgce(live.filter(pl.col("start") >= jan1.astimezone(UTC)), this_year)
        got = _energy(client, jan1, hi)
        got_kgce = float(got.get_column("kgce").sum()) if got.height else 0.0
        want = _true_kgce(hist, this_year) + live_kgce
        ytd = {
            "from": jan1.isoformat(),
            "tce": round(got_kgce / 1000, 3),
            "truth_tce": round(want / 1000, 3),
            "difference_pct": _pct(got_kgce, want),
        }

    events = final.frames.get("events")
    flagged = (
        {str(k): n for k, n in events.group_by("kind").len().sort("kind").iter_rows()}
        if events is not None and events.height
        else {}
    )
    top, bottom, reference = _intensity(month, lo, hi, tz, history_truth is not None)
    return {
        "enterprises": registry.enterprises.height,
        "meters": registry.meters.height,
        "gateways": fleet.gateways.height,
        "range": {"from": lo.isoformat(), "to": hi.isoformat()},
        "history": history,
        "messages_published": published,
        "ingest": {
            "readings_written": ingest.get("written"),
            "rejected_by_reason": ingest.get("rejected_by_reason", {}),
            "malformed_injected": int(plan.malformed.height),
        },
        "aggregate_follow": follow,
        "alerts_watch": {
            "evaluations": len(watch),
            "transitions": sum(len(w.get("transitions", [])) for w in watch),
            "last_levels": watch[-1]["levels"] if watch else None,
        },
        "energy_by_county": by["county"],
        "energy_by_industry": by["industry"],
        "most_intensive": top,
        "least_intensive": bottom,
        "intensity_reference": reference,
        "city_total": {
            "tce": round(city_kgce / 1000, 3),
            "truth_tce": round(true_kgce / 1000, 3),
            "difference_pct": _pct(city_kgce, true_kgce),
            "unreported_tce": round(unreported_kgce / 1000, 3),
        },
        "year_to_date": ytd,
        "flagged_readings": flagged,
        "outage": None
        if outage is None
        else {
            "gateway": outage.gateway,
            "enterprise": outage.enterprise,
            "from": datetime.fromtimestamp(outage.from_ms / 1000, zone).isoformat(),
            "messages_removed": outage.messages_removed,
            "readings_removed": outage.readings_removed,
        },
        "alerts": _alerts(alerts),
        "screening": _screening(screening),
        "classes": _classes(classes),
        "plan": screening.get("plan"),
        "dashboards": {
            "dashboards": dashboards.get("dashboards", []),
            "alert_rules": len(dashboards.get("alert_rules", [])),
            "files": len(dashboards.get("files", [])),
        },
        "designed": {
            "breach": list(cast.breach),
            "green_leaders": list(cast.leaders),
            "green_candidates": list(cast.candidates),
            "outage_enterprise": cast.outage_enterprise,
            "outage_gateway": cast.outage_gateway,
        },
    }


def _intensity(
    month: Any, lo: datetime, hi: datetime, tz: str, with_history: bool
) -> tuple[Any, Any, Any]:
    """This month's intensity to date, pro-rated to the days it covers (days of energy
    against a whole month's output would flatter everyone by the same factor)."""
    intensity = month.frames.get("intensity")
    if intensity is None or not intensity.height:
        return [], [], None
    last_local = (hi - timedelta(seconds=1)).astimezone(ZoneInfo(tz))
    first = last_local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days_in_month = ((first + timedelta(days=32)).replace(day=1) - first).days
    covered_from = first if with_history else max(lo.astimezone(ZoneInfo(tz)), first)
    days_covered = (hi - covered_from).total_seconds() / 86400
    scale = days_in_month / min(max(days_covered, 1e-9), days_in_month)
    rows = intensity.filter(pl.col("ratio_to_reference").is_not_null())
    if "period" in rows.columns:
        rows = rows.filter(pl.col("period") == "month")
    if "time" in rows.columns:  # the newest month: the one the live days end in
        rows = rows.filter(pl.col("time") == pl.col("time").max())
    ranked = (
        rows.with_columns(
            (pl.col("tce_per_10k_yuan_value_added") * scale).alias("tce_per_10k_yuan_va"),
            (pl.col("ratio_to_reference") * scale).alias("ratio"),
        )
        .select(
            "enterprise", "county", "industry", "tce",
            pl.col("tce_per_10k_yuan_va").round(4),
            pl.col("reference_tce_per_10k_yuan").round(4).alias("reference"),
            pl.col("ratio").round(3),
        )
        .sort("ratio")
    )  # fmt: skip
    reference = intensity.get_column("reference")[0] if "reference" in intensity.columns else None
    return ranked.tail(10).reverse().to_dicts(), ranked.head(10).to_dicts(), reference


def _alerts(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Levels per scope, the red enterprises and why, the data-quality alerts."""
    levels: dict[str, dict[str, int]] = {}
    red: list[dict[str, Any]] = []
    quality: list[dict[str, Any]] = []
    for o in objects:
        scope = levels.setdefault(o["scope"], {"red": 0, "yellow": 0, "green": 0})
        scope[o["level"]] = scope.get(o["level"], 0) + 1
        if o["level"] == "red":
            red.append(
                {
                    "scope": o["scope"],
                    "subject": o["subject"],
                    "name": o.get("name"),
                    "county": o.get("county"),
                    # the red lines first: what makes it red
                    "why": sorted(o.get("reasons") or [], key=lambda r: " red:" not in r[:20]),
                }
            )
        for a in o.get("alerts", []):
            if a["rule"] in ("gateway_silent", "data_completeness") and a["state"] == "firing":
                quality.append(
                    {
                        "subject": o["subject"],
                        "rule": a["rule"],
                        "level": a["level"],
                        "message": a.get("message", ""),
                    }
                )
    return {"levels": levels, "red": red, "data_quality": quality}


def _screening(s: dict[str, Any]) -> dict[str, Any]:
    cands = s.get("candidates", [])
    return {
        "period": s.get("period"),
        "summary": s.get("summary"),
        "passed": sum(1 for c in cands if c.get("passed")),
        "top": [
            {
                k: c.get(k)
                for k in ("rank", "enterprise", "name", "county", "score", "passed", "fail_reasons")
            }
            for c in cands[:10]
        ],
        "criteria": {k: s.get("criteria", {}).get(k) for k in ("file", "version", "status")},
    }


def _classes(c: dict[str, Any]) -> dict[str, Any]:
    ents = c.get("enterprises", [])
    counts: dict[str, int] = {}
    for e in ents:
        counts[e["class"]] = counts.get(e["class"], 0) + 1
    return {
        "period": c.get("period"),
        "counts": dict(sorted(counts.items())),
        "enterprises": len(ents),
        "by_enterprise": {e["enterprise"]: e["class"] for e in ents},
    }
