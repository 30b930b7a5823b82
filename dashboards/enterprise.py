"""企业详情 · Enterprise detail: what an enterprise's energy manager (or the bureau, for any
enterprise) watches.

Panels, and the question each answers:

- *Power or flow per boundary meter* (one panel per carrier): how hard each meter at the plant's
  boundary is drawing, as each hour's mean rate (kW for kWh meters, m³/h for gas meters, ...);
- *Daily energy by carrier*: how much of each energy carrier the plant used per day (tce),
  with the double-control figure beside the total;
- *Sub-meter breakdown*: where inside the plant the energy went over the range (sub-meters,
  never added to the total);
- *Intensity against reference and target*: energy per 10k yuan of output, month by month, and
  the latest period against the provincial reference and the plant's own target;
- *Quota progress*: how much of the annual energy quota this year's double-control energy has
  used (registry quota; a registry is needed);
- *Daily completeness*: whether the data behind the numbers is whole (the national online
  monitoring rule asks for at least 90%);
- *Alerts*: every alert transition of the plant in the range; alerts are also annotations on
  the energy panels.

The same builder makes the shared dashboard (an enterprise variable) and each enterprise's own
copy (the enterprise fixed, its target drawn as a line), which ``greenmon dashboards push
--per-enterprise`` files into that enterprise's folder.
"""

from __future__ import annotations

from collections.abc import Iterable

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from greenmon.dashboards import queries
from greenmon.dashboards.city import rule_variable
from greenmon.dashboards.common import (
    INFLUX,
    MIXED,
    UNIT_INTENSITY,
    UNIT_TCE,
    base_dashboard,
    carrier_variable,
    county_variable,
    enterprise_uid,
    enterprise_variable,
    industry_variable,
    join_on_enterprise,
    period_variable,
    registry_query,
    title,
)
from greenmon.dashboards.influxql import InfluxQL, tag_matches
from greenmon.dashboards.panels import (
    bar_gauge,
    bars,
    stat_panel,
    table_panel,
    thresholds,
    time_series,
)
from greenmon.dashboards.site import EnterpriseInfo, Site
from greenmon.registry import carrier_units

__all__ = ["UID", "enterprise_dashboard", "own_dashboard_uid", "rate_unit"]

UID = "greenmon-enterprise"
_ENT = "\"enterprise\" = '$enterprise'"
#: A meter's registered unit -> the Grafana unit of its quantity per hour.
_RATE_UNITS = {
    "Wh": "watt",
    "kWh": "kwatt",
    "MWh": "megwatt",
    "MJ": "suffix: MJ/h",
    "GJ": "suffix: GJ/h",
    "m3": "suffix: m³/h",
    "Nm3": "suffix: Nm³/h",
    "kg": "suffix: kg/h",
    "t": "suffix: t/h",
}
#: The national online-monitoring rule: at least 90% of the data.
COMPLETENESS_FLOOR = 0.9


def own_dashboard_uid(enterprise_id: str) -> str:
    return enterprise_uid("greenmon-e", enterprise_id)


def rate_unit(units: Iterable[str]) -> tuple[str, str]:
    """(Grafana unit, label) for a panel showing meters registered in `units` per hour; mixed
    units cannot share an axis, so they get a plain number and say so."""
    distinct = sorted(set(units))
    if len(distinct) == 1 and distinct[0] in _RATE_UNITS:
        unit = distinct[0]
        return _RATE_UNITS[unit], f"{unit}/h"
    return "none", "meter's registered unit per hour"


def _carrier_units(site: Site) -> dict[str, list[str]]:
    """Carrier -> registered units of its boundary meters (registry order), or every carrier
    of the coefficients file with its reference unit when there is no registry."""
    if not site.meters:
        return {c: [units[0]] for c, units in carrier_units().items()}
    found: dict[str, list[str]] = {}
    for m in site.meters:
        if m.role == "boundary":
            found.setdefault(m.carrier, []).append(m.unit)
    return found


def _power_panel(carrier: str, units: list[str]) -> timeseries.Panel:
    unit, label = rate_unit(units)
    # Hourly windows: the aggregator writes per-meter 1h, 1d and 1mo windows by default
    # ([aggregate] meter_windows); an hour's quantity is the hour's mean rate.
    query = (
        'SELECT "quantity" AS "rate" FROM "meter_energy" WHERE "window" = \'1h\' AND '
        f"\"role\" = 'boundary' AND {_ENT} AND \"carrier\" = '{carrier}' AND "
        f'{tag_matches("carrier", "carrier")} AND $timeFilter GROUP BY "meter"'
    )
    return (
        time_series(
            title(f"边界表计 {carrier}", f"Power or flow per boundary meter: {carrier} ({label})"),
            f"Each {carrier} boundary meter's consumption per hour ({label}): its mean rate "
            "over each hour (the aggregator's hourly meter windows). Empty when the enterprise "
            "has no "
            f"{carrier} meter or `carrier` leaves it out.",
            unit,
        )
        .with_target(InfluxQL(query).alias("$tag_meter"))
        .min(0)
    )


def _annotation() -> dash.AnnotationQuery:
    query = (
        'SELECT "message", "level", "state", "rule" FROM "alert" WHERE "scope" = \'enterprise\' '
        f"AND \"subject\" = '$enterprise' AND {tag_matches('rule', 'rule')} AND $timeFilter"
    )
    return (
        dash.AnnotationQuery()
        .name("企业预警 Enterprise alerts")
        .datasource(INFLUX)
        .enable(True)
        .icon_color("red")
        .target(InfluxQL(query).ref_id("Anno").table().annotation_columns("message", "rule"))
    )


def enterprise_dashboard(site: Site, enterprise: EnterpriseInfo | None = None) -> dash.Dashboard:
    """The shared detail dashboard, or (with `enterprise`) that enterprise's own copy."""
    if enterprise is None:
        board = base_dashboard(
            UID,
            title("企业详情", "Enterprise detail"),
            "One enterprise's power, energy by carrier, sub-meters, intensity, quota and data "
            "completeness (greenmon; pick the enterprise above).",
            site,
        )
        board = (
            board.with_variable(county_variable())
            .with_variable(industry_variable())
            .with_variable(enterprise_variable(multi=False))
        )
    else:
        site = site.only(enterprise.enterprise_id)
        board = base_dashboard(
            own_dashboard_uid(enterprise.enterprise_id),
            title(f"企业详情 {enterprise.name}", f"Enterprise {enterprise.enterprise_id}"),
            f"{enterprise.name} ({enterprise.enterprise_id}, {enterprise.county}, industry "
            f"{enterprise.industry}): power, energy by carrier, sub-meters, intensity, quota "
            "and data completeness (greenmon).",
            site,
        ).with_variable(
            dash.ConstantVariable("enterprise")
            .label("企业 Enterprise")
            .value(enterprise.enterprise_id)
        )
    board = (
        board.with_variable(carrier_variable())
        .with_variable(period_variable())
        .with_variable(rule_variable())
        .annotation(_annotation())
        .with_row(dash.Row(title("功率与能耗", "Power and energy")))
    )
    for carrier, units in _carrier_units(site).items():
        board = board.with_panel(_power_panel(carrier, units))

    by_carrier = (
        'SELECT "kgce" / 1000 FROM "energy" WHERE "window" = \'1d\' AND '
        f"{_ENT} AND \"carrier\" != 'total' AND {tag_matches('carrier', 'carrier')} AND "
        '$timeFilter GROUP BY "carrier"'
    )
    double_control = (
        'SELECT "double_control_kgce" / 1000 FROM "energy" WHERE "window" = \'1d\' AND '
        f"{_ENT} AND \"carrier\" = 'total' AND $timeFilter"
    )
    sub_meters = (
        'SELECT sum("kgce") / 1000 FROM "meter_energy" WHERE "window" = \'1d\' AND '
        f"\"role\" = 'sub' AND {_ENT} AND {tag_matches('carrier', 'carrier')} AND $timeFilter "
        'GROUP BY "meter"'
    )
    board = board.with_panel(
        bars(
            title("每日能耗（按能源品种）", "Daily energy by carrier"),
            "Comprehensive energy per local day and carrier (tce; export deducted, sub-meters "
            "never added), and the day's double-control energy (without renewables consumed "
            "on site and raw-material energy) as a line.",
            UNIT_TCE,
        )
        .with_target(InfluxQL(by_carrier).ref_id("A").alias("$tag_carrier"))
        .with_target(InfluxQL(double_control).ref_id("B").alias("双控 double control"))
    ).with_panel(
        bar_gauge(
            title("分项计量", "Sub-meter breakdown"),
            "Energy measured by each sub-meter over the selected range (tce): a breakdown of "
            "the boundary meters' energy, never added to the total.",
            UNIT_TCE,
        ).with_target(InfluxQL(sub_meters).alias("$tag_meter"))
    )

    board = board.with_row(dash.Row(title("强度、配额与数据质量", "Intensity, quota, data")))
    board = board.with_panel(_intensity_history(site, enterprise))
    if site.has_registry:
        board = (
            board.with_panel(_intensity_latest(site).datasource(MIXED))
            .with_panel(_quota_used(site).datasource(MIXED))
            .with_panel(_quota_tce(site).datasource(MIXED))
        )
    board = board.with_panel(_completeness()).with_panel(_alerts_table())
    return board


def _intensity_history(site: Site, enterprise: EnterpriseInfo | None) -> timeseries.Panel:
    query = (
        'SELECT "tce_per_10k_yuan" AS "intensity", "reference_tce_per_10k_yuan" AS "reference" '
        f'FROM "intensity" WHERE "period" = \'month\' AND {_ENT} AND '
        f"{queries.INTENSITY_LOOKBACK}"
    )
    panel = (
        time_series(
            title("月度能耗强度", "Monthly intensity against the reference"),
            "tce per 10k yuan of output value, month by month (points at the month's start), "
            "and the provincial reference it is compared with"
            + (
                "; the dashed line is the enterprise's intensity target (registry)."
                if enterprise is not None and enterprise.intensity_target is not None
                else "."
            ),
            UNIT_INTENSITY,
        )
        .with_target(InfluxQL(query).alias("$col"))
        .show_points(cm.VisibilityMode.ALWAYS)
        .point_size(6)
        .min(0)
    )
    if enterprise is not None and enterprise.intensity_target is not None:
        panel = panel.thresholds(
            thresholds((None, "green"), (enterprise.intensity_target, "red"))
        ).thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
    return panel


def _intensity_latest(site: Site) -> bargauge.Panel:
    query = (
        'SELECT last("tce_per_10k_yuan") AS "intensity", '
        'last("reference_tce_per_10k_yuan") AS "reference" FROM "intensity" WHERE '
        f"{tag_matches('period', 'period')} AND {_ENT} AND {queries.INTENSITY_LOOKBACK} "
        'GROUP BY "enterprise"'
    )
    keep = ["intensity", "reference", "intensity_target_tce_per_10k_yuan"]
    return (
        bar_gauge(
            title("能耗强度对比", "Intensity: latest period, reference, target"),
            "The latest period's intensity (variable `period`, tce per 10k yuan of output "
            "value), the provincial reference, and the enterprise's own target from the "
            "registry (enterprises.csv).",
            UNIT_INTENSITY,
            span=8,
        )
        .with_target(InfluxQL(query).ref_id("A").table().datasource(INFLUX))
        .with_target(registry_query(site))
        .with_transformation(join_on_enterprise())
        .with_transformation(
            _keep(
                keep,
                {
                    "intensity": "强度 intensity",
                    "reference": "省参考 reference",
                    "intensity_target_tce_per_10k_yuan": "目标 target",
                },
            )
        )
    )


def _ytd_query() -> str:
    return (
        'SELECT sum("double_control_kgce") / 1000 AS "ytd_tce" FROM "energy" WHERE '
        f"\"window\" = '1d' AND \"carrier\" = 'total' AND {_ENT} AND $timeFilter "
        'GROUP BY "enterprise"'
    )


def _quota_panel(site: Site, name: str, description: str, unit: str,
                 shape: dm.DataTransformerConfig) -> stat.Panel:  # fmt: skip
    """This year's double-control energy joined with the registry's quota, then `shape`d."""
    return (
        stat_panel(name, description, unit)
        .span(8)
        .height(9)
        .with_target(InfluxQL(_ytd_query()).ref_id("A").table().datasource(INFLUX))
        .with_target(registry_query(site))
        .with_transformation(join_on_enterprise())
        .with_transformation(shape)
        .time_from("now/y")
    )


def _quota_used(site: Site) -> stat.Panel:
    share = dm.DataTransformerConfig(
        id_val="calculateField",
        options={
            "mode": "binary",
            "binary": {"left": "ytd_tce", "operator": "/", "right": "annual_quota_tce"},
            "alias": "配额使用率 quota used",
            "replaceFields": True,
        },
    )
    return (
        _quota_panel(
            site,
            title("本年配额使用率", "Quota used this year"),
            "This year's double-control energy so far as a share of the annual energy quota "
            "in the registry (relative time now/y). Compare it with the share of the year gone.",
            "percentunit",
            share,
        )
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "green"), (0.8, "yellow"), (1.0, "red")))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
    )


def _quota_tce(site: Site) -> stat.Panel:
    return _quota_panel(
        site,
        title("本年双控能耗与配额", "Double-control energy this year and the quota"),
        "This year's double-control energy so far and the annual energy quota in the "
        "registry (tce).",
        UNIT_TCE,
        _keep(
            ["ytd_tce", "annual_quota_tce"],
            {"ytd_tce": "本年 this year", "annual_quota_tce": "年配额 annual quota"},
        ),
    )


def _keep(fields: list[str], rename: dict[str, str]) -> dm.DataTransformerConfig:
    """Keep only `fields` (by name) and rename them."""
    return dm.DataTransformerConfig(
        id_val="organize",
        options={
            "includeByName": dict.fromkeys(fields, True),
            "renameByName": rename,
        },
    )


def _completeness() -> timeseries.Panel:
    total = (
        'SELECT "completeness" FROM "energy" WHERE "window" = \'1d\' AND '
        f"\"carrier\" = 'total' AND {_ENT} AND $timeFilter"
    )
    meters = (
        'SELECT "completeness" FROM "meter_energy" WHERE "window" = \'1d\' AND '
        f'"role" != \'sub\' AND {_ENT} AND $timeFilter GROUP BY "meter"'
    )
    return (
        time_series(
            title("每日数据完整率", "Daily data completeness"),
            "Share of each local day covered by readings: the enterprise (its least complete "
            "counted meter) and each boundary, generation and export meter. The dashed line is "
            "the national online-monitoring rule's 90%.",
            "percentunit",
        )
        .with_target(InfluxQL(total).ref_id("A").alias("企业 enterprise"))
        .with_target(InfluxQL(meters).ref_id("B").alias("$tag_meter"))
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "red"), (COMPLETENESS_FLOOR, "green")))
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED))
        .show_points(cm.VisibilityMode.ALWAYS)
    )


def _alerts_table() -> table.Panel:
    query = (
        'SELECT "rule", "level", "state", "value", "threshold", "message" FROM "alert" WHERE '
        f"\"scope\" = 'enterprise' AND \"subject\" = '$enterprise' AND "
        f"{tag_matches('rule', 'rule')} AND $timeFilter"
    )
    return table_panel(
        title("企业预警记录", "Alert transitions"),
        "Every transition (pending, firing, resolved) of the enterprise's alerts in the "
        "selected range, newest first, as `greenmon alerts` recorded them.",
        sort="time",
        desc=True,
    ).with_target(InfluxQL(query).table())
