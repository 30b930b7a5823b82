"""绿色工厂筛选与亩均分类 · Screening and classes: what the bureau decides with.

Panels, and the question each answers:

- *Candidates passing*: how many enterprises of the selection pass the green-factory screening
  for the year;
- *Green-factory candidates, ranked*: who the best candidates are, their score, whether they
  pass, and the gap per indicator (the ``gaps`` string ``greenmon screen`` writes beside the
  DESIGN §3 fields; the full sentences are in its output and HTML report);
- *A/B/C/D counts*: how the selection divides into resource-efficiency classes (亩均论英雄),
  T = not evaluated;
- *Classes, ranked*: each enterprise's class, score and rank.

Everything comes from the ``screening`` and ``efficiency_class`` measurements that ``greenmon
screen`` and ``greenmon classify`` write (one point per enterprise and year, tag ``year``); the
panels show "no data" until those commands have run.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard as dm

from greenmon.dashboards.common import (
    base_dashboard,
    columns,
    county_variable,
    industry_variable,
    organize,
    query_variable,
    title,
)
from greenmon.dashboards.influxql import InfluxQL, tag_matches
from greenmon.dashboards.panels import bar_gauge, stat_panel, table_panel
from greenmon.dashboards.site import Site

__all__ = ["CLASSES", "UID", "screening_dashboard"]

UID = "greenmon-screening"
CLASSES = ("A", "B", "C", "D", "T")
_CLASS_COLORS = {"A": "green", "B": "blue", "C": "orange", "D": "red", "T": "gray"}


def _where(*extra: str) -> str:
    return " AND ".join(
        [
            tag_matches("year", "year"),
            tag_matches("county", "county"),
            tag_matches("industry", "industry"),
            *extra,
        ]
    )


def year_variable() -> dash.QueryVariable:
    return query_variable(
        "year",
        "年度 Year",
        'SHOW TAG VALUES FROM "screening" WITH KEY = "year"',
        multi=False,
        sort=dm.VariableSort.NUMERICAL_DESC,
    )


def screening_dashboard(site: Site) -> dash.Dashboard:
    candidates = (
        'SELECT last("rank") AS "rank", last("score") AS "score", last("passed") AS "passed", '
        'last("gaps") AS "gaps" '
        f'FROM "screening" WHERE {_where()} GROUP BY "enterprise", "county", "industry"'
    )
    passing = 'SELECT count("rank") AS "passed" FROM "screening" WHERE ' + _where(
        '("passed" = true OR "passed" = 1)'
    )
    # "rank" and "class" are written for every enterprise; "score" is not (none for class T, nor
    # when no indicator could be scored): counts go by the former.
    evaluated = f'SELECT count("rank") AS "evaluated" FROM "screening" WHERE {_where()}'
    classes = (
        'SELECT last("class") AS "class", last("score") AS "score", last("rank") AS "rank" '
        f'FROM "efficiency_class" WHERE {_where()} GROUP BY "enterprise", "county", "industry"'
    )
    counts = bar_gauge(
        title("亩均效益分类", "Resource-efficiency classes A/B/C/D"),
        "How many enterprises of the selection are in each class for the year (亩均论英雄; T = "
        "not evaluated: below the land threshold, too little data, or exempt).",
        "none",
    ).span(8)
    for i, cls in enumerate(CLASSES):
        query = f'SELECT count("class") AS "{cls}" FROM "efficiency_class" WHERE ' + _where(
            f"\"class\" = '{cls}'"
        )
        counts = counts.with_target(InfluxQL(query).ref_id(chr(ord("A") + i)).alias(cls))
    counts = counts.with_override(
        dm.MatcherConfig(id_val="byNames", options={"mode": "include", "names": list(CLASSES)}),
        [dm.DynamicConfigValue(id_val="color", value={"mode": "palette-classic"})],
    )
    pass_map = dm.ValueMap(
        options={
            "true": dm.ValueMappingResult(text="✓ 通过 pass", color="green", index=0),
            "1": dm.ValueMappingResult(text="✓ 通过 pass", color="green", index=1),
            "false": dm.ValueMappingResult(text="✗ 未通过 fail", color="red", index=2),
            "0": dm.ValueMappingResult(text="✗ 未通过 fail", color="red", index=3),
        }
    )
    class_map = dm.ValueMap(
        options={
            c: dm.ValueMappingResult(text=c, color=color, index=i)
            for i, (c, color) in enumerate(_CLASS_COLORS.items())
        }
    )
    return (
        base_dashboard(
            UID,
            title("绿色工厂筛选与亩均分类", "Screening and efficiency classes"),
            "Green-factory candidates and resource-efficiency classes per year, as `greenmon "
            "screen` and `greenmon classify` decided them (greenmon).",
            site,
        )
        .with_variable(year_variable())
        .with_variable(county_variable())
        .with_variable(industry_variable())
        .with_row(dash.Row(title("绿色工厂候选", "Green-factory candidates")))
        .with_panel(
            stat_panel(
                title("通过筛选", "Candidates passing"),
                "Enterprises of the selection that pass the green-factory screening for the "
                "year, and how many were evaluated.",
                "none",
            )
            .span(8)
            .height(9)
            .with_target(InfluxQL(passing).ref_id("A").alias("通过 passing"))
            .with_target(InfluxQL(evaluated).ref_id("B").alias("参评 evaluated"))
        )
        .with_panel(
            table_panel(
                title("候选企业排名", "Candidates, ranked"),
                "Every screened enterprise, best first: rank, score (0-100), whether it passes, "
                "and per indicator the change still needed (to the baseline value when below "
                "it, else to the leading value). Full sentences: `greenmon screen` and its HTML "
                "report.",
                span=16,
                height=12,
                sort="排名 rank",
            )
            .mappings([pass_map])
            .with_target(InfluxQL(candidates).table())
            .with_transformation(
                organize(
                    rename=columns(
                        "enterprise", "county", "industry", "rank", "score", "passed", "gaps"
                    )
                )
            )
        )
        .with_row(dash.Row(title("亩均效益分类", "Resource-efficiency classes")))
        .with_panel(counts)
        .with_panel(
            table_panel(
                title("企业分类排名", "Classes, ranked"),
                "Every classified enterprise: class, composite score and rank for the year.",
                span=16,
                height=12,
                sort="排名 rank",
            )
            .mappings([class_map])
            .with_target(InfluxQL(classes).table())
            .with_transformation(
                organize(
                    rename=columns("enterprise", "county", "industry", "class", "score", "rank")
                )
            )
        )
    )
