"""城市总览 · City overview: what a city or county industry bureau watches.

Panels, and the question each answers:

- *Today / this month / this year*: how much energy (comprehensive and double-control tce) and
  carbon (tCO₂) the selected counties and industries used so far (daily ``energy`` windows,
  Grafana's relative times ``now/d``, ``now/M``, ``now/y`` in the dashboard's time zone);
- *Daily energy by county / by industry*: which places and trades drive the total, day by day;
- *Counties / industries table*: the range's totals side by side, comprehensive and
  double-control tce and tCO₂;
- *Intensity against the provincial reference*: which enterprises use more energy per 10k yuan
  than the reference (``ratio_to_reference`` > 1), for the chosen period;
- *Double-control alerts now*: how many enterprise alerts are red, yellow, green; the county and
  city status beside it (from the ``alert`` measurement the rules write; "no data" until
  ``greenmon alerts`` has run);
- *Map* (only when the registry has ``latitude``/``longitude``): where the plants are, sized and
  coloured by their energy over the range.

County and city alerts are annotations on the energy panels.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import geomap, stat
from grafana_foundation_sdk.models import dashboard as dm

from greenmon.dashboards import queries
from greenmon.dashboards.common import (
    INFLUX,
    MIXED,
    UNIT_TCE,
    UNIT_TCO2,
    base_dashboard,
    carrier_variable,
    county_variable,
    industry_variable,
    join_on_enterprise,
    organize,
    period_variable,
    registry_query,
    title,
)
from greenmon.dashboards.influxql import InfluxQL, tag_matches
from greenmon.dashboards.panels import (
    bars,
    by_names,
    map_panel,
    stat_panel,
    table_panel,
    thresholds,
)
from greenmon.dashboards.site import Site

__all__ = ["UID", "city_dashboard", "rule_variable"]

UID = "greenmon-city"
#: Where the map opens: Nantong (32°N, 121°E), the whole prefecture in view.
NANTONG = (32, 121)


def rule_variable() -> dash.QueryVariable:
    query = 'SHOW TAG VALUES FROM "alert" WITH KEY = "rule"'
    return (
        dash.QueryVariable("rule")
        .label("预警规则 Alert rule")
        .datasource(INFLUX)
        .query(query)
        .definition(query)
        .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(text="All", value="$__all"))
    )


def _so_far(zh: str, en: str, relative: str, *, carbon: bool) -> stat.Panel:
    if carbon:
        panel = stat_panel(
            title(f"{zh}碳排放", f"CO₂ {en.lower()}"),
            f"{en}: CO₂ emitted by the energy of the selected counties and industries (t; net "
            "purchased electricity × grid factor, fuels × their factors), summed from the "
            f"daily windows. The period is fixed (Grafana relative time {relative}, dashboard "
            "time zone), whatever range is selected above.",
            UNIT_TCO2,
        ).with_target(InfluxQL(queries.total_energy("kgco2", alias="tco2")).alias("CO₂ t"))
    else:
        panel = (
            stat_panel(
                title(f"{zh}能耗", f"Energy {en.lower()}"),
                f"{en}: comprehensive energy consumption (GB/T 2589) and double-control "
                "energy (without renewables consumed on site and raw-material energy) of the "
                "selected counties and industries, tce, summed from the daily windows the "
                f"aggregator writes. The period is fixed (Grafana relative time {relative}, "
                "dashboard time zone), whatever range is selected above.",
                UNIT_TCE,
            )
            .with_target(
                InfluxQL(queries.total_energy("kgce", alias="tce")).ref_id("A").alias("综合 total")
            )
            .with_target(
                InfluxQL(queries.total_energy("double_control_kgce", alias="dc_tce"))
                .ref_id("B")
                .alias("双控 double control")
            )
        )
    return panel.time_from(relative).span(4)


def _energy_annotation() -> dash.AnnotationQuery:
    query = (
        'SELECT "message", "level", "state", "rule", "subject" FROM "alert" '
        f'WHERE "scope" =~ /^(county|city)$/ AND {tag_matches("rule", "rule")} AND $timeFilter'
    )
    return (
        dash.AnnotationQuery()
        .name("区县与全市预警 County and city alerts")
        .datasource(INFLUX)
        .enable(True)
        .icon_color("red")
        .target(InfluxQL(query).ref_id("Anno").table().annotation_columns("message", "rule"))
    )


def city_dashboard(site: Site) -> dash.Dashboard:
    tz = site.tz
    board = (
        base_dashboard(
            UID,
            title("城市总览", "City overview"),
            "Energy, carbon, intensity and double-control status of the city, by county and "
            "industry (greenmon; generated by `greenmon dashboards build`).",
            site,
        )
        .with_variable(county_variable())
        .with_variable(industry_variable())
        .with_variable(carrier_variable())
        .with_variable(period_variable())
        .with_variable(rule_variable())
        .annotation(_energy_annotation())
        .with_row(dash.Row(title("能耗与碳排放", "Energy and carbon")))
    )
    for carbon in (False, True):
        for zh, en, relative in (("今日", "Today", "now/d"), ("本月", "This month", "now/M"),
                                 ("本年", "This year", "now/y")):  # fmt: skip
            board = board.with_panel(_so_far(zh, en, relative, carbon=carbon))
    board = board
    for by, zh, en in (("county", "区县", "county"), ("industry", "行业", "industry")):
        board = board.with_panel(
            bars(
                title(f"每日综合能耗（按{zh}）", f"Daily energy by {en}"),
                f"Comprehensive energy consumption per local day and {en}, in tce (stacked: "
                "the bar's height is the selection's total).",
                UNIT_TCE,
            ).with_target(
                InfluxQL(queries.daily_total("kgce", by, tz)).ref_id("A").alias(f"$tag_{by}")
            )
        )
    for by, zh, en in (("county", "区县", "County"), ("industry", "行业", "Industry")):
        board = board.with_panel(
            table_panel(
                title(f"{zh}汇总", f"{en} totals over the selected range"),
                f"Per {en.lower()}: comprehensive energy (tce), double-control energy (tce) "
                "and CO₂ (t) over the selected time range.",
                span=12,
                height=9,
                sort="tce",
                desc=True,
            )
            .unit("none")
            .decimals(1)
            .with_target(InfluxQL(queries.grouped_energy(by)).ref_id("A").table())
            .with_transformation(
                organize(
                    rename={
                        by: f"{zh} {en}",
                        "tce": "综合能耗 tce",
                        "dc_tce": "双控能耗 double-control tce",
                        "tco2": "CO₂ t",
                    }
                )
            )
        )

    intensity = (
        'SELECT last("tce_per_10k_yuan") AS "intensity", '
        'last("reference_tce_per_10k_yuan") AS "reference", '
        'last("ratio_to_reference") AS "ratio", last("rank_in_industry") AS "rank", '
        'last("peers_in_industry") AS "peers", last("completeness") AS "completeness" '
        f'FROM "intensity" WHERE {tag_matches("period", "period")} AND '
        f"{tag_matches('county', 'county')} AND {tag_matches('industry', 'industry')} AND "
        f'{queries.INTENSITY_LOOKBACK} GROUP BY "enterprise", "county", "industry"'
    )
    board = board.with_row(dash.Row(title("能耗强度", "Energy intensity"))).with_panel(
        table_panel(
            title("能耗强度对比省参考值", "Intensity against the provincial reference"),
            "Per enterprise, the latest period (variable `period`) ending in the selected "
            "range: tce per 10k yuan of output value, the provincial reference it is compared "
            "with, and their ratio on the reference's own denominator (> 1: more "
            "energy-intensive than the reference; the reference row and its status are in the "
            "aggregator's output). Rank 1 = least intensive among the industry's enterprises.",
            sort="比值 ratio",
            desc=True,
            height=12,
        )
        .unit("none")
        .decimals(3)
        .with_override(
            by_names("ratio"),
            [
                dm.DynamicConfigValue(
                    id_val="thresholds",
                    value=thresholds((None, "green"), (1.0, "orange"), (1.5, "red")).build(),
                ),
                dm.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-background"}
                ),
            ],
        )
        .with_target(InfluxQL(intensity).ref_id("A").table())
        .with_transformation(
            organize(
                rename={
                    "enterprise": "企业 enterprise",
                    "county": "区县 county",
                    "industry": "行业 industry",
                    "intensity": "强度 tce/万元",
                    "reference": "省参考 reference tce/万元",
                    "ratio": "比值 ratio",
                    "rank": "行业排名 rank",
                    "peers": "同行数 peers",
                    "completeness": "完整率 completeness (0-1)",
                }
            )
        )
    )

    board = (
        board.with_row(dash.Row(title("能耗双控", "Energy double control")))
        .with_panel(_alert_count("red", "红色预警", "Red alerts"))
        .with_panel(_alert_count("yellow", "黄色预警", "Yellow alerts"))
        .with_panel(_alert_count("green", "绿色", "Green"))
        .with_panel(
            table_panel(
                title("区县与全市双控状态", "County and city status"),
                "The latest transition of every county and city alert: level, state, the "
                "value against its threshold, and the rules' message (what it would take to "
                "return to green).",
                span=24,
                height=8,
            )
            .mappings([_level_colors()])
            .with_target(
                InfluxQL(
                    'SELECT last("level") AS "level", last("state") AS "state", '
                    'last("value") AS "value", last("threshold") AS "threshold", '
                    'last("message") AS "message" FROM "alert" '
                    f'WHERE "scope" =~ /^(county|city)$/ AND {tag_matches("rule", "rule")} '
                    f'AND {queries.ALERT_LATEST} GROUP BY "scope", "subject", "rule"'
                )
                .ref_id("A")
                .table()
            )
            .with_transformation(organize())
        )
    )
    if any(e.located for e in site.enterprises):
        board = board.with_row(dash.Row(title("企业分布", "Map"))).with_panel(
            _map(site).datasource(MIXED)
        )
    return board


def _alert_count(level: str, zh: str, en: str) -> stat.Panel:
    return (
        stat_panel(
            title(zh, en),
            f"How many enterprise alerts (enterprise × rule, variable `rule`) are {level}"
            + (" and firing" if level != "green" else " (resolved or green)")
            + ", as of the end of the selected range: the latest transition in the `alert` "
            "measurement that `greenmon alerts` writes (0 also before it has ever run).",
            "none",
            no_value="0",
        )
        .span(8)
        .height(5)
        .color_scheme(dash.FieldColor().mode(dm.FieldColorModeId.FIXED).fixed_color(level))
        .with_target(InfluxQL(queries.alert_count(level)).alias(en))
    )


def _level_colors() -> dm.ValueMap:
    return dm.ValueMap(
        options={
            "red": dm.ValueMappingResult(text="红 red", color="red", index=0),
            "yellow": dm.ValueMappingResult(text="黄 yellow", color="yellow", index=1),
            "green": dm.ValueMappingResult(text="绿 green", color="green", index=2),
        }
    )


def _map(site: Site) -> geomap.Panel:
    energy = (
        'SELECT sum("kgce") / 1000 AS "tce" FROM "energy" WHERE "window" = \'1d\' AND '
        f"\"carrier\" = 'total' AND {tag_matches('county', 'county')} AND "
        f'{tag_matches("industry", "industry")} AND $timeFilter GROUP BY "enterprise"'
    )
    located = sum(1 for e in site.enterprises if e.located)
    return (
        map_panel(
            title("企业分布与能耗", "Where the plants are, and their energy"),
            f"{located} enterprises with coordinates in the registry (latitude, longitude in "
            "enterprises.csv), sized and coloured by comprehensive energy over the selected "
            "range (tce). The registry facts are embedded in the dashboard at build time and "
            "served by Grafana's TestData data source.",
            size_field="tce",
            color_field="tce",
            center=NANTONG,
            zoom=9,
        )
        .unit(UNIT_TCE)
        .color_scheme(dash.FieldColor().mode(dm.FieldColorModeId.CONTINUOUS_GR_YL_RD))
        .with_target(InfluxQL(energy).ref_id("A").table().datasource(INFLUX))
        .with_target(registry_query(site))
        .with_transformation(join_on_enterprise())
        .with_transformation(organize())
    )
