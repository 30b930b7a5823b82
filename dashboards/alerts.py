"""预警 · Alerts: what is firing now and what happened, from the ``alert`` measurement.

Panels, and the question each answers:

- *Firing now*: which enterprises, counties or the city have an alert firing at the end of the
  selected range, how bad (red/yellow), the value against its threshold and the message;
- *Transitions per day*: how many alerts changed state each day, by level (is it getting
  better or worse?);
- *Recent transitions*: the log of every pending / firing / resolved transition in the range.

The ``alert`` measurement is what ``greenmon alerts`` writes (one point per lifecycle
transition); until it has run, the panels show "no data". Grafana-managed rules (silent
enterprise, capacity) live in Grafana's own alerting, not here.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard as dm

from greenmon.dashboards import queries
from greenmon.dashboards.city import rule_variable
from greenmon.dashboards.common import base_dashboard, organize, title
from greenmon.dashboards.influxql import InfluxQL, tag_matches
from greenmon.dashboards.panels import bars, by_names, table_panel
from greenmon.dashboards.site import Site

__all__ = ["UID", "alerts_dashboard"]

UID = "greenmon-alerts"
_LEVELS = (("red", "红 red"), ("yellow", "黄 yellow"), ("green", "绿 green"))


def scope_variable() -> dash.CustomVariable:
    return (
        dash.CustomVariable("scope")
        .label("范围 Scope")
        .values("enterprise,county,city")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(text="All", value="$__all"))
    )


def level_mapping() -> dm.ValueMap:
    return dm.ValueMap(
        options={
            level: dm.ValueMappingResult(text=text, color=level, index=i)
            for i, (level, text) in enumerate(_LEVELS)
        }
    )


def alerts_dashboard(site: Site) -> dash.Dashboard:
    selection = f"{tag_matches('scope', 'scope')} AND {tag_matches('rule', 'rule')}"
    firing = (
        'SELECT "level", "value", "threshold", "message" FROM (SELECT last("level") AS "level", '
        'last("state") AS "state", last("value") AS "value", last("threshold") AS "threshold", '
        f'last("message") AS "message" FROM "alert" WHERE {selection} AND '
        f'{queries.ALERT_LATEST} GROUP BY "scope", "subject", "rule") '
        'WHERE "state" = \'firing\' GROUP BY "scope", "subject", "rule"'
    )
    recent = (
        'SELECT "scope", "subject", "rule", "level", "state", "value", "threshold", "message" '
        f'FROM "alert" WHERE {selection} AND $timeFilter ORDER BY time DESC LIMIT 500'
    )
    per_day = bars(
        title("每日预警变化", "Alert transitions per day"),
        "How many alert transitions (pending, firing, resolved) each local day brought, by level.",
        "none",
        span=24,
    )
    for i, (level, text) in enumerate(_LEVELS):
        query = (
            f'SELECT count("state") FROM "alert" WHERE {selection} AND "level" = \'{level}\' '
            f"AND $timeFilter GROUP BY time(1d) fill(none) tz('{site.tz}')"
        )
        per_day = per_day.with_target(InfluxQL(query).ref_id("ABC"[i]).alias(text))
        per_day = per_day.with_override(
            by_names(text),
            [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": level})],
        )
    return (
        base_dashboard(
            UID,
            title("预警", "Alerts"),
            "Double-control, data-quality and sudden-change alerts of enterprises, counties and "
            "the city, as `greenmon alerts` recorded them (greenmon).",
            site,
        )
        .with_variable(scope_variable())
        .with_variable(rule_variable())
        .with_panel(
            table_panel(
                title("正在触发的预警", "Firing now"),
                "Every alert firing at the end of the selected range (its latest transition "
                "is `firing`): scope, subject, rule, level, the value against its threshold and "
                "what it would take to return to green.",
                height=10,
            )
            .mappings([level_mapping()])
            .with_target(InfluxQL(firing).table())
            .with_transformation(organize())
        )
        .with_panel(per_day)
        .with_panel(
            table_panel(
                title("最近的预警变化", "Recent transitions"),
                "The latest 500 transitions in the selected range, newest first.",
                height=12,
            )
            .mappings([level_mapping()])
            .with_target(InfluxQL(recent).table())
        )
    )
