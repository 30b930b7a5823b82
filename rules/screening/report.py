"""The HTML report a bureau officer prints or forwards: one self-contained page.

Everything is inline — styles in a ``<style>`` element, charts as SVG drawn in Python
(`greenmon.rules.screening.charts`) — and the page loads nothing: no script, font, image or
stylesheet from anywhere (a test opens it in headless Chromium and checks that no request
left it and that every chart drew). Column names are bilingual (中文 / English). Sections:
the plan's indicators; the ranked candidates with their gaps (``screen``); energy intensity
against the provincial reference by enterprise (chart); the county summary; the class
distribution (chart); the enterprises by class (``classify``); and a footer naming every rule
and reference file used, with its version and status.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import polars as pl

from greenmon import __version__
from greenmon.rules.errors import RulesError
from greenmon.rules.screening.charts import Bar, Stack, bar_chart, stacked_bars
from greenmon.rules.screening.classify import NOT_EVALUATED
from greenmon.rules.screening.service import Judgement

__all__ = ["ReportError", "render_report", "write_report"]

CLASS_COLOURS = {"A": "#1b7837", "B": "#7fbf7b", "C": "#f1a340", "D": "#d73027", "T": "#b8b8b8"}
_PASS, _FAIL = "#2e8b57", "#a7b1bc"
_CANDIDATE_ROWS_AFTER_PASSING = 20

_CSS = """
:root { --ink:#1f2933; --muted:#5f6b7a; --line:#d9dee4; --head:#eef2f6; --ok:#2e8b57;
  --no:#c0392b; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px 28px 40px; color: var(--ink);
  font-family: "Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "Microsoft YaHei",
  "PingFang SC", "Helvetica Neue", Arial, sans-serif; font-size: 13px; line-height: 1.45; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 8px; padding-bottom: 4px;
  border-bottom: 2px solid var(--line); }
.meta, .note { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card .big { font-size: 20px; font-weight: 600; }
.ok { color: var(--ok); font-weight: 600; } .no { color: var(--no); font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { border: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.gap { font-size: 12px; }
.cls { display: inline-block; min-width: 18px; text-align: center; color: #fff; border-radius: 3px;
  font-weight: 600; }
svg.chart { display: block; margin: 6px 0 2px; }
footer { margin-top: 30px; border-top: 2px solid var(--line); padding-top: 8px; font-size: 12px; }
footer li { margin: 2px 0; }
@media print { body { max-width: none; padding: 0; font-size: 11px; } h2 { break-after: avoid; }
  tr, .card, svg.chart { break-inside: avoid; } }
"""


class ReportError(RulesError):
    """The report file cannot be written."""


def _e(x: Any) -> str:
    return "" if x is None else escape(str(x))


def _num(x: Any, digits: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "✓" if x else "✗"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return escape(str(x))


def _table(head: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    out = ["<table><thead><tr>", *(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            out.append(f"<td{cls}>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _plan_section(plan: dict[str, Any]) -> str:
    cards = []
    i9 = plan["indicator_9"]
    ratio = i9["ratio_to_reference"]
    verdict_cls = "ok" if ratio is not None and ratio < 1 else "no"
    cards.append(
        f'<div class="card"><div>指标9 Indicator 9 — {_e(i9["name"])} / {_e(i9["name_en"])}</div>'
        f'<div class="big">{_num(i9["tce_per_10k_yuan"], 4)} <small>tce/万元</small></div>'
        f"<div>全省参考 provincial reference: {_num(i9['reference_tce_per_10k_yuan'], 4)} "
        f"({_e(i9['reference_status'])}) — "
        f'<span class="{verdict_cls}">{_e(i9["verdict"])}</span></div>'
        f'<div class="note">{_e(i9["enterprises"])} / {_e(i9["of_enterprises"])} enterprises, '
        f"tce / {_e(i9['denominator'].removesuffix('_10k_yuan').replace('_', ' '))}; "
        f"{_e(i9['note'])}</div></div>"
    )
    if "indicator_10" in plan:
        i10 = plan["indicator_10"]
        cards.append(
            f'<div class="card"><div>指标10 Indicator 10 — {_e(i10["name"])} / '
            f"{_e(i10['name_en'])}</div>"
            f'<div class="big">{_e(i10["passing_not_yet_recognised"])} / {_e(i10["new_target"])}'
            f" <small>new candidates / target</small></div>"
            f"<div>{_e(i10['passing_screening'])} pass the screening; "
            f"{_e(i10['recognised_declared'])} already declare a provincial or national green "
            f"factory (task {_e(i10['cumulative_task'])}: {_e(i10['cumulative_target'])} "
            f"cumulative)</div></div>"
        )
    if "safeguard_3" in plan:
        rows = plan["safeguard_3"]["class_counts_by_county"]
        evaluated = sum(r["evaluated"] for r in rows)
        cards.append(
            f'<div class="card"><div>保障措施3 Safeguard 3 — {_e(plan["safeguard_3"]["name"])} / '
            f"{_e(plan['safeguard_3']['name_en'])}</div>"
            f'<div class="big">{evaluated} <small>enterprises classified in '
            f"{len(rows)} counties</small></div>"
            f"<div>class counts per county: see the county summary below</div></div>"
        )
    return (
        '<h2>行动计划能耗指标 Plan indicators</h2><div class="cards">'
        + "".join(cards)
        + f'</div><p class="note">{_e(plan["plan"])} ({_e(plan["plan_en"])}); '
        f"targets: {_e(plan['file'])}</p>"
    )


def _candidates_section(data: dict[str, Any]) -> str:
    cands = data["candidates"]
    passing = [c for c in cands if c["passed"]]
    shown = cands[: len(passing) + _CANDIDATE_ROWS_AFTER_PASSING]
    rows = []
    for c in shown:
        reqs = " ".join(
            f'<span class="{"ok" if r["met"] else "no"}" title="{_e(r["detail"])}">'
            f"{'✓' if r['met'] else '✗'} {_e(r['short'])}</span><br>"
            for r in c["requirements"]
        )
        gaps = []
        for i in c["indicators"]:
            if i["gap"]:
                gaps.append(f"{_e(i['name'])}: {_e(i['gap']['text'])}")
            elif not i["scored"]:
                gaps.append(f"{_e(i['name'])}: <i>未评分 not scored — {_e(i['reason'])}</i>")
        verdict = (
            '<span class="ok">通过 yes</span>' if c["passed"] else '<span class="no">否 no</span>'
        )
        rows.append(
            [
                _num(c["rank"]),
                f"{_e(c['enterprise'])}<br>{_e(c['name'])}",
                _e(c["county"]),
                _e(c["industry"]),
                _num(c["score"]),
                f"{c['coverage']:.0%}",
                verdict,
                reqs,
                '<div class="gap">' + "<br>".join(gaps) + "</div>",
            ]
        )
    more = len(cands) - len(shown)
    crit = data["criteria"]
    sc = crit["scoring"]
    intro = (
        f'<p class="note">{_e(crit["standard"]["code"])}: pass = every basic requirement met, '
        f"score ≥ {sc['pass_score']:g} ({_e(sc['status'])}) and coverage ≥ "
        f"{sc['min_coverage']:g}. Scored groups weigh {crit['assessed_weight']:g} of the "
        f"standard; not assessed: {_e(', '.join(crit['not_assessed']) or 'none')}. "
        f"Baselines and leading values: see each gap's source in the JSON output "
        f"(peers where no verified value exists — {_e(crit['peers']['status'])}).</p>"
    )
    table = _table(
        ["排名 Rank", "企业 Enterprise", "县区 County", "行业 Industry", "得分 Score",
         "覆盖 Coverage", "通过 Passed", "基本要求 Requirements", "差距 Gaps"],
        rows,
        numeric={0, 4, 5},
    )  # fmt: skip
    tail = (
        f'<p class="note">{more} more enterprises (not passing) are in the JSON output.</p>'
        if more > 0
        else ""
    )
    summary = data["summary"]
    return (
        f"<h2>绿色工厂候选排名 Green-factory candidates, ranked ({summary['passed']} of "
        f"{summary['enterprises']} pass)</h2>{intro}{table}{tail}"
    )


def _intensity_chart(j: Judgement, passed: set[str] | None, classes: dict[str, str]) -> str:
    facts = j.facts
    on_added = pl.col("reference_denominator") == "value_added"
    denominator = (
        pl.when(on_added)
        .then(pl.col("value_added_10k_yuan"))
        .otherwise(pl.col("output_value_10k_yuan"))
    )
    ratio = (pl.col("ratio_kgce") / 1000.0 / denominator) / pl.col("reference_tce_per_10k_yuan")
    rows = (
        facts.select("enterprise", "name", ratio.alias("ratio"), "reference_label")
        .filter(pl.col("ratio").is_not_null() & pl.col("ratio").is_finite())
        .sort("ratio")
    )
    bars = []
    for r in rows.iter_rows(named=True):
        if passed is not None:
            colour = _PASS if r["enterprise"] in passed else _FAIL
        else:
            colour = CLASS_COLOURS.get(classes.get(r["enterprise"], "T"), "#888")
        bars.append(
            Bar(
                label=r["enterprise"],
                value=float(r["ratio"]),
                colour=colour,
                tooltip=f"{r['enterprise']} {r['name']}: {r['ratio']:.2f} x provincial",
            )
        )
    labels = rows.get_column("reference_label").drop_nulls().unique().sort().to_list()
    missing = facts.height - rows.height
    if not bars:
        return (
            "<h2>能耗强度与全省参考值 Energy intensity against the provincial reference</h2>"
            '<p class="note">No enterprise has both energy data and statistics for the period.</p>'
        )
    colouring = (
        "green: passes the screening; grey: does not"
        if passed is not None
        else "colour: efficiency class"
    )
    chart = bar_chart(
        "intensity",
        "Energy intensity / provincial reference, by enterprise",
        bars,
        y_label="x provincial reference",
        reference=1.0,
        reference_label="全省参考 = 1 provincial reference",
        cap=4.0,
    )
    return (
        "<h2>能耗强度与全省参考值 Energy intensity against the provincial reference</h2>"
        f'{chart}<p class="note">{len(bars)} enterprises, lowest first ({colouring}; ▲ above '
        f"4x, drawn at the top). {missing} without energy data or statistics for the period's "
        f"whole months are left out. Reference: {_e('; '.join(labels))}.</p>"
    )


def _county_section(j: Judgement, data: dict[str, Any]) -> str:
    counties = j.classes.counties
    cuts = [c.class_ for c in j.rules.efficiency.rules.classes.cuts]
    passing: dict[str, int] = {}
    if j.screening is not None:
        passing = dict(
            j.screening.candidates.group_by("county").agg(pl.col("passed").sum()).iter_rows()
        )
    basis = dict(
        j.classes.benchmarks.group_by("county")
        .agg(pl.col("basis").unique().sort().str.join("; "))
        .iter_rows()
    )
    head = ["县区 County", "企业 Enterprises", "参评 Evaluated",
            *(f'<span class="cls" style="background:{CLASS_COLOURS.get(c, "#888")}">{_e(c)}</span>'
              for c in [*cuts, NOT_EVALUATED]),
            "平均得分 Mean score"]  # fmt: skip
    if j.screening is not None:
        head.append("通过筛选 Passing screening")
    head.append("基准 Benchmark basis")
    rows = []
    for r in counties.iter_rows(named=True):
        row = [_e(r["county"]), _num(r["enterprises"]), _num(r["evaluated"])]
        row += [_num(r[c]) for c in [*cuts, NOT_EVALUATED]]
        row.append(_num(r["mean_score"]))
        if j.screening is not None:
            row.append(_num(passing.get(r["county"], 0)))
        row.append(_e(basis.get(r["county"], "–")))
        rows.append(row)
    numeric = set(range(1, len(head) - 1))
    return "<h2>县区汇总 County summary</h2>" + _table(head, rows, numeric)


def _class_chart(j: Judgement) -> str:
    cuts = [c.class_ for c in j.rules.efficiency.rules.classes.cuts]
    names = [*cuts, NOT_EVALUATED]
    counties = j.classes.counties
    stacks = [
        Stack(r["county"], [(c, float(r[c]), CLASS_COLOURS.get(c, "#888")) for c in names])
        for r in counties.iter_rows(named=True)
    ]
    totals = {c: float(counties.get_column(c).sum()) for c in names}
    stacks.append(Stack("全市 City", [(c, totals[c], CLASS_COLOURS.get(c, "#888")) for c in names]))
    labels = {c.class_: f"{c.class_} {c.name}" for c in j.rules.efficiency.rules.classes.cuts}
    labels[NOT_EVALUATED] = "T 不参评"
    chart = stacked_bars(
        "classes",
        "Efficiency classes per county",
        stacks,
        legend=[(labels[c], CLASS_COLOURS.get(c, "#888")) for c in names],
    )
    profile = j.rules.efficiency.rules.profile
    return (
        f"<h2>亩均分类分布 Class distribution ({_e(profile.name)})</h2>{chart}"
        f'<p class="note">{_e(profile.note)}</p>'
    )


def _classes_section(data: dict[str, Any]) -> str:
    ids = [i["id"] for i in data["criteria"]["indicators"]]
    names = {i["id"]: f"{i['name']} {i['name_en']}" for i in data["criteria"]["indicators"]}
    rows = []
    for e in data["enterprises"]:
        values = {i["id"]: i for i in e["indicators"]}
        colour = CLASS_COLOURS.get(e["class"], "#888")
        rank = f"{e['rank']}/{e['ranked_among']}" if e["rank"] is not None else "–"
        rows.append(
            [
                _e(e["county"]),
                f'<span class="cls" style="background:{colour}">{_e(e["class"])}</span> '
                f"{_e(e['class_name'])}",
                rank,
                f"{_e(e['enterprise'])} {_e(e['name'])}",
                _num(e["score"]),
                *(_num(values[i]["value"], 2) if i in values else "–" for i in ids),
                _e(e["reason"] or ""),
            ]
        )
    head = ["县区 County", "类别 Class", "排名 Rank", "企业 Enterprise", "得分 Score",
            *(_e(names[i]) for i in ids), "不参评原因 Not evaluated because"]  # fmt: skip
    rule = data["criteria"]["tie_rule"]
    return (
        "<h2>企业分类 Enterprises by class</h2>"
        f'<p class="note">Ranked within each county ({_e(rule)}).</p>'
        + _table(head, rows, numeric={2, 4, *range(5, 5 + len(ids))})
    )


def _footer(j: Judgement) -> str:
    items = []
    for f in j.files():
        if "label" in f:
            items.append(f"<li><b>{_e(f['kind'])}</b>: {_e(f['label'])}</li>")
        else:
            items.append(f"<li><b>{_e(f['kind'])}</b>: {_e(', '.join(f['files']))}</li>")
    refs = j.facts.get_column("reference_label").drop_nulls().unique().sort().to_list()
    if refs:
        items.append(f"<li><b>intensity reference</b>: {_e('; '.join(refs))}</li>")
    if j.screening is not None:
        std = j.rules.screening.rules.standard
        items.append(
            f"<li><b>standard</b>: {_e(std.code)} {_e(std.title)} (in force {_e(std.in_force)}, "
            f"{_e(std.status)}) — {_e(std.note)}</li>"
        )
    return (
        "<footer><b>依据文件 References and rule files</b> (status: verified / third-party / "
        "unverified / assumption / placeholder)<ul>"
        + "".join(items)
        + f'</ul><div class="note">greenmon {__version__}; registry {_e(j.registry_root)}; '
        f"generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Placeholders and assumptions are "
        "stand-ins until the official values are supplied: decisions must not rest on them."
        "</div></footer>"
    )


def render_report(j: Judgement, data: dict[str, Any]) -> str:
    """The report page for a `screen_json`/`classify_json` object `data` of judgement `j`."""
    screening = data["command"] == "screen"
    title = (
        "绿色工厂筛选与亩均评价 Green-factory screening and efficiency classes"
        if screening
        else "亩均效益分类 Resource-use efficiency classes"
    )
    passed = {c["enterprise"] for c in data["candidates"] if c["passed"]} if screening else None
    classes = dict(j.classes.enterprises.select("enterprise", "class").iter_rows())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)} {j.period.year}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)} · {j.period.year}</h1>",
        f'<div class="meta">{escape(j.period.headline())} · {escape(j.period.tz)}</div>',
        _plan_section(j.plan),
    ]
    if screening:
        parts.append(_candidates_section(data))
    parts.append(_intensity_chart(j, passed, classes))
    parts.append(_county_section(j, data))
    parts.append(_class_chart(j))
    if not screening:
        parts.append(_classes_section(data))
    parts.append(_footer(j))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: Path, j: Judgement, data: dict[str, Any]) -> None:
    """Write the report to `path` (UTF-8)."""
    try:
        Path(path).write_text(render_report(j, data), encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write the report {path}: {exc.strerror or exc}") from exc
