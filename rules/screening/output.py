"""What `greenmon screen` and `greenmon classify` print: JSON objects and Rich tables.

`screen_json` / `classify_json` build the ``--json`` objects (documented in the README): every
enterprise with its requirements and indicators (value, baseline, leading, score, gap), the
plan's indicators, the period's coverage, and every rule and reference file used with its
version and status. `print_screen` / `print_classify` render the same content for people.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table
from rich.text import Text

from greenmon.rules.screening.classify import NOT_EVALUATED
from greenmon.rules.screening.screen import gap_short, gap_text
from greenmon.rules.screening.service import Judgement

__all__ = ["classify_json", "print_classify", "print_screen", "screen_json"]


def _round(x: Any, digits: int = 4) -> Any:
    return round(x, digits) if isinstance(x, float) else x


def _criteria_notes(j: Judgement) -> dict[str, Any]:
    c = j.rules.screening.rules
    assessed = c.assessed_groups()
    groups = [
        {
            "id": gid,
            "name": g.name,
            "name_en": g.name_en,
            "weight": g.weight,
            "status": g.status,
            "assessed": gid in assessed,
            "note": g.note,
        }
        for gid, g in c.groups.items()
    ]
    share = sum(g.weight for gid, g in c.groups.items() if gid in assessed)
    return {
        **j.rules.screening.info.as_dict(),
        "standard": c.standard.model_dump(),
        "scoring": {**c.scoring.model_dump(), "curve": "linear between baseline and leading"},
        "peers": c.peers.model_dump(),
        "groups": groups,
        "assessed_weight": round(share, 6),
        "not_assessed": [g["name"] for g in groups if not g["assessed"]],
    }


def _indicator_rows(j: Judgement) -> dict[str, list[dict[str, Any]]]:
    assert j.screening is not None
    out: dict[str, list[dict[str, Any]]] = {}
    for row in j.screening.indicators.iter_rows(named=True):
        gap = None
        if row["gap_target"] is not None:
            gap = {
                "to": row["gap_target"],
                "value": _round(row["gap_to"], 6),
                "change": _round(row["gap_change"], 2),
                "kind": "percent" if row["gap_kind"] == "relative" else "absolute",
                "text": gap_text(row),
                "short": gap_short(row),
            }
        out.setdefault(row["enterprise"], []).append(
            {
                "id": row["indicator"],
                "name": row["name"],
                "name_en": row["name_en"],
                "group": row["group"],
                "unit": row["unit"],
                "direction": row["direction"],
                "weight": _round(row["weight"], 6),
                "value": _round(row["value"], 6),
                "baseline": _round(row["baseline"], 6),
                "leading": _round(row["leading"], 6),
                "baseline_source": row["baseline_source"],
                "baseline_status": row["baseline_status"],
                "score": _round(row["score"], 2),
                "scored": row["scored"],
                "reason": row["reason"],
                "gap": gap,
            }
        )
    return out


def _requirement_rows(j: Judgement) -> dict[str, list[dict[str, Any]]]:
    assert j.screening is not None
    out: dict[str, list[dict[str, Any]]] = {}
    for row in j.screening.requirements.sort("enterprise", "order").iter_rows(named=True):
        out.setdefault(row["enterprise"], []).append(
            {
                "id": row["requirement"],
                "name": row["name"],
                "name_en": row["name_en"],
                "short": row["short"],
                "met": row["met"],
                "detail": row["detail"],
            }
        )
    return out


def _common(j: Judgement, command: str) -> dict[str, Any]:
    return {
        "command": command,
        "period": j.period.describe(),
        "registry": j.registry_root,
        "files": j.files(),
        "stored": j.written,
        "rows_read": j.rows_read,
        "seconds": {k: round(v, 3) for k, v in j.seconds.items()},
    }


def screen_json(j: Judgement) -> dict[str, Any]:
    """The ``greenmon screen --json`` object."""
    assert j.screening is not None
    indicators, requirements = _indicator_rows(j), _requirement_rows(j)
    cand = j.screening.candidates
    candidates = [
        {
            "rank": row["rank"],
            "enterprise": row["enterprise"],
            "name": row["name"],
            "county": row["county"],
            "industry": row["industry"],
            "score": _round(row["score"], 2),
            "coverage": _round(row["coverage"], 4),
            "passed": row["passed"],
            "points_to_pass": _round(row["points_to_pass"], 2),
            "fail_reasons": row["fail_reasons"],
            "requirements": requirements.get(row["enterprise"], []),
            "indicators": indicators.get(row["enterprise"], []),
        }
        for row in cand.iter_rows(named=True)
    ]
    passed = int(cand.get_column("passed").sum())
    return {
        **_common(j, "screen"),
        "criteria": _criteria_notes(j),
        "plan": j.plan,
        "summary": {
            "enterprises": cand.height,
            "passed": passed,
            "failed": cand.height - passed,
            "requirements_failed": int((~cand.get_column("requirements_met")).sum()),
            "not_scored": int(cand.get_column("score").is_null().sum()),
        },
        "candidates": candidates,
    }


def classify_json(j: Judgement) -> dict[str, Any]:
    """The ``greenmon classify --json`` object."""
    c = j.rules.efficiency.rules
    names = {cut.class_: (cut.name, cut.name_en) for cut in c.classes.cuts}
    names[NOT_EVALUATED] = ("不适合评价", "not evaluated")
    per: dict[str, list[dict[str, Any]]] = {}
    for row in j.classes.indicators.iter_rows(named=True):
        per.setdefault(row["enterprise"], []).append(
            {
                "id": row["indicator"],
                "value": _round(row["value"], 6),
                "benchmark": _round(row["benchmark"], 6),
                "ratio": _round(row["ratio"], 4),
                "points": _round(row["points"], 3),
                "basis": row["basis"],
            }
        )
    ent = _ranked_classes(j.classes.enterprises, [cut.class_ for cut in c.classes.cuts])
    enterprises = [
        {
            "enterprise": row["enterprise"],
            "name": row["name"],
            "county": row["county"],
            "industry": row["industry"],
            "class": row["class"],
            "class_name": names.get(row["class"], ("", ""))[0],
            "class_name_en": names.get(row["class"], ("", ""))[1],
            "score": _round(row["score"], 3),
            "rank": row["rank"],
            "ranked_among": row["ranked_among"],
            "ranked_in": row["ranked_in"],
            "evaluated": row["evaluated"],
            "reason": row["t_reason"],
            "indicators": per.get(row["enterprise"], []),
        }
        for row in ent.iter_rows(named=True)
    ]
    return {
        **_common(j, "classify"),
        "profile": c.profile.model_dump(),
        "criteria": {
            **j.rules.efficiency.info.as_dict(),
            "scope": c.scope.model_dump(),
            "benchmark": c.benchmark.model_dump(),
            "indicators": [i.model_dump() for i in c.indicators],
            "classes": c.classes.model_dump(by_alias=True),
            "tie_rule": "tied scores share the better rank (1, 2, 2, 4): tied firms get the same "
            "class; listed by enterprise id",
        },
        "counties": j.classes.counties.to_dicts(),
        "benchmarks": j.classes.benchmarks.select(
            "county", "indicator", "benchmark", "basis", "benchmark_firms"
        ).to_dicts(),
        "enterprises": enterprises,
    }


def _ranked_classes(ent: pl.DataFrame, classes: list[str]) -> pl.DataFrame:
    order = {c: n for n, c in enumerate([*classes, NOT_EVALUATED])}
    return (
        ent.with_columns(pl.col("class").replace_strict(order, default=len(order)).alias("_o"))
        .sort(["county", "_o", "rank", "enterprise"], nulls_last=True)
        .drop("_o")
    )


# --------------------------------------------------------------------------- text


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _plan_lines(console: Console, plan: dict[str, Any]) -> None:
    i9 = plan["indicator_9"]
    value = i9["tce_per_10k_yuan"]
    ref = i9["reference_tce_per_10k_yuan"]
    per = i9["denominator"].removesuffix("_10k_yuan").replace("_", " ")
    console.print(
        Text.assemble(
            ("plan indicator 9 ", "bold"),
            f"({i9['name']}): registered enterprises "
            f"{_fmt(value, 4)} tce/10k yuan of {per} vs "
            f"provincial {_fmt(ref, 4)} -> {i9['verdict']} "
            f"({i9['enterprises']} of {i9['of_enterprises']} enterprises; reference: "
            f"{i9['reference']})",
        )
    )
    if "indicator_10" in plan:
        i10 = plan["indicator_10"]
        console.print(
            Text.assemble(
                ("plan indicator 10 ", "bold"),
                f"({i10['name']}): {i10['passing_screening']} pass the screening, "
                f"{i10['passing_not_yet_recognised']} of them not yet recognised "
                f"(target {i10['new_target']} new); {i10['recognised_declared']} declare a "
                f"provincial/national green factory (task {i10['cumulative_task']}: "
                f"{i10['cumulative_target']} cumulative)",
            )
        )
    if "safeguard_3" in plan:
        rows = plan["safeguard_3"]["class_counts_by_county"]
        keys = [k for k in rows[0] if len(k) <= 3] if rows else []
        parts = [f"{r['county']} " + "/".join(str(r[k]) for k in keys) for r in rows]
        console.print(
            Text.assemble(
                ("safeguard 3 ", "bold"),
                f"(classes {'/'.join(keys)} per county): " + "; ".join(parts),
            )
        )
    console.print(Text(f"plan targets: {plan['file']}", style="dim"))


def print_screen(console: Console, j: Judgement, top: int) -> None:
    assert j.screening is not None
    crit = _criteria_notes(j)
    s = j.rules.screening.rules
    console.print(
        Text.assemble(
            ("green-factory screening ", "bold"),
            f"{s.standard.code} — {j.period.headline()}",
        )
    )
    console.print(
        Text(
            f"criteria: {crit['label']}; pass: score >= {s.scoring.pass_score:g} "
            f"({s.scoring.status}), coverage >= {s.scoring.min_coverage:g}, every basic "
            f"requirement met; assessed groups weigh {crit['assessed_weight']:g} of 1"
            + (
                f" (not assessed: {', '.join(crit['not_assessed'])})"
                if crit["not_assessed"]
                else ""
            ),
            style="dim",
        )
    )
    _plan_lines(console, j.plan)
    cand = j.screening.candidates
    indicators = _indicator_rows(j)
    shown = cand if top <= 0 else cand.head(top)
    table = Table(
        "#",
        "enterprise",
        "name",
        "county",
        "industry",
        "score",
        "coverage",
        "pass",
        "why not / largest gap",
        title=f"candidates, best first ({int(cand['passed'].sum())} of {cand.height} pass)",
    )
    requirements = _requirement_rows(j)
    for row in shown.iter_rows(named=True):
        failed = [r["short"] for r in requirements.get(row["enterprise"], []) if not r["met"]]
        notes = [f"✗ {', '.join(failed)}"] if failed else []
        notes += [why for why in row["fail_reasons"] if not why.startswith("requirement not met")]
        gaps = [i for i in indicators.get(row["enterprise"], []) if i["gap"]]
        if gaps:
            worst = max(gaps, key=lambda i: i["weight"] * (100.0 - (i["score"] or 0.0)))
            notes.append(f"{worst['name']} {worst['gap']['short']}")
        unscored = [i["name"] for i in indicators.get(row["enterprise"], []) if not i["scored"]]
        if unscored:
            notes.append("not scored: " + ", ".join(unscored))
        note = "; ".join(notes)
        table.add_row(
            str(row["rank"]),
            row["enterprise"],
            row["name"],
            row["county"],
            row["industry"],
            _fmt(row["score"]),
            f"{row['coverage']:.0%}",
            "[green]yes[/]" if row["passed"] else "[red]no[/]",
            note,
        )
    console.print(table)
    if 0 < top < cand.height:
        console.print(
            Text(f"{cand.height - top} more: --top 0 shows all, --json has every detail", "dim")
        )
    _footer(console, j)


def print_classify(console: Console, j: Judgement, top: int) -> None:
    c = j.rules.efficiency.rules
    console.print(
        Text.assemble(
            ("resource-use efficiency classes ", "bold"),
            f"(亩均论英雄) {c.profile.name} — {j.period.headline()}",
        )
    )
    console.print(Text(f"criteria: {j.rules.efficiency.info.label}", style="dim"))
    if c.profile.note:
        console.print(Text(c.profile.note, style="dim"))
    classes = [cut.class_ for cut in c.classes.cuts] + [NOT_EVALUATED]
    summary = Table("county", "enterprises", "evaluated", *classes, "mean score", "benchmark basis",
                    title="per county")  # fmt: skip
    basis = j.classes.benchmarks.group_by("county").agg(
        pl.col("basis").unique().sort().str.join("; ")
    )
    rows = j.classes.counties.join(basis, on="county", how="left")
    for row in rows.iter_rows(named=True):
        summary.add_row(
            row["county"],
            str(row["enterprises"]),
            str(row["evaluated"]),
            *(str(row[k]) for k in classes),
            _fmt(row["mean_score"]),
            row["basis"] or "-",
        )
    console.print(summary)
    ent = _ranked_classes(j.classes.enterprises, classes[:-1])
    shown = ent if top <= 0 else ent.filter(pl.int_range(pl.len()).over("county") < top)
    ids = [i.id for i in c.indicators]
    table = Table(
        "county", "class", "rank", "enterprise", "name", "score", *ids, "not evaluated because",
        title="enterprises by county and class" + (f" (first {top} of each county)" if top else ""),
    )  # fmt: skip
    for row in shown.iter_rows(named=True):
        rank = f"{row['rank']}/{row['ranked_among']}" if row["rank"] is not None else "-"
        table.add_row(
            row["county"],
            row["class"],
            rank,
            row["enterprise"],
            row["name"],
            _fmt(row["score"]),
            *(_fmt(row.get(f"value_{i}"), 2) for i in ids),
            row["t_reason"] or "",
        )
    console.print(table)
    if shown.height < ent.height:
        console.print(
            Text(
                f"{ent.height - shown.height} more: --top 0 shows all, --json has every detail",
                "dim",
            )
        )
    _footer(console, j)


def _footer(console: Console, j: Judgement) -> None:
    for item in j.files():
        label = item.get("label") or ", ".join(item.get("files", []))
        console.print(Text(f"{item['kind']}: {label}", style="dim"))
    if j.written:
        stored = ", ".join(f"{k} {v} points" for k, v in j.written.items())
        console.print(Text(f"stored: {stored}", style="dim"))
