"""What every greenmon dashboard shares: data sources, template variables, units, filters.

Uids are stable (a re-build or re-push updates, never duplicates) and short enough for
Grafana's 40-character limit. Titles are bilingual, Chinese first (``能耗 · Energy``), so a
bureau officer and a visiting engineer read the same panel. Units are Grafana unit ids or
``suffix:`` units naming the physical unit (tce, tCO₂, tce/万元).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import testdata
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.common import DataSourceRef

from greenmon.dashboards.influxql import INFLUXDB_TYPE, tag_matches
from greenmon.dashboards.site import Site

__all__ = [
    "FOLDER_TITLE",
    "FOLDER_UID",
    "INFLUX",
    "INFLUX_NAME",
    "INFLUX_UID",
    "REGISTRY",
    "REGISTRY_NAME",
    "REGISTRY_UID",
    "TAGS",
    "UNIT_TCE",
    "UNIT_TCO2",
    "base_dashboard",
    "columns",
    "enterprise_uid",
    "filters",
    "query_variable",
    "registry_query",
    "title",
]

FOLDER_UID = "greenmon"
FOLDER_TITLE = "greenmon"
TAGS = ["greenmon"]

INFLUX_UID = "greenmon-influxdb"
INFLUX_NAME = "greenmon InfluxDB"
INFLUX = DataSourceRef(type_val=INFLUXDB_TYPE, uid=INFLUX_UID)
#: Grafana's built-in TestData data source serves the registry facts embedded in a dashboard
#: (coordinates, quotas, targets): InfluxDB does not hold them.
REGISTRY_TYPE = "grafana-testdata-datasource"
REGISTRY_UID = "greenmon-registry"
REGISTRY_NAME = "greenmon registry"
REGISTRY = DataSourceRef(type_val=REGISTRY_TYPE, uid=REGISTRY_UID)
MIXED = DataSourceRef(type_val="datasource", uid="-- Mixed --")

UNIT_TCE = "suffix: tce"
UNIT_TCO2 = "suffix: tCO₂"
UNIT_INTENSITY = "suffix: tce/万元"

_UID_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def title(zh: str, en: str) -> str:
    return f"{zh} · {en}"


def enterprise_uid(prefix: str, enterprise_id: str) -> str:
    """A Grafana uid for something per enterprise: readable when the id allows, else hashed
    (uids are at most 40 characters of letters, digits, ``-`` and ``_``)."""
    safe = _UID_SAFE.sub("-", enterprise_id)
    uid = f"{prefix}-{safe}"
    if safe != enterprise_id or len(uid) > 40:
        digest = hashlib.sha1(enterprise_id.encode()).hexdigest()[:12]
        uid = f"{prefix}-{safe[: 40 - len(prefix) - 14]}-{digest}"
    return uid


def filters(*clauses: str) -> str:
    """``WHERE`` conditions joined with AND (the time filter is always last)."""
    return " AND ".join(clauses)


def county_industry() -> list[str]:
    return [tag_matches("county", "county"), tag_matches("industry", "industry")]


def query_variable(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool,
    sort: dm.VariableSort = dm.VariableSort.ALPHABETICAL_ASC,
    refresh: dm.VariableRefresh = dm.VariableRefresh.ON_DASHBOARD_LOAD,
) -> dash.QueryVariable:
    """A template variable filled by an InfluxQL ``SHOW TAG VALUES`` query."""
    var = (
        dash.QueryVariable(name)
        .label(label)
        .datasource(INFLUX)
        .query(query)
        .definition(query)
        .refresh(refresh)
        .sort(sort)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        # `.*` instead of a regex listing every value: short queries for a city of thousands.
        var = var.all_value(".*").current(dm.VariableOption(text="All", value="$__all"))
    return var


def county_variable() -> dash.QueryVariable:
    return query_variable(
        "county", "区县 County", 'SHOW TAG VALUES FROM "energy" WITH KEY = "county"', multi=True
    )


def industry_variable() -> dash.QueryVariable:
    return query_variable(
        "industry",
        "行业 Industry",
        'SHOW TAG VALUES FROM "energy" WITH KEY = "industry" WHERE '
        + tag_matches("county", "county"),
        multi=True,
    )


def enterprise_variable(*, multi: bool) -> dash.QueryVariable:
    return query_variable(
        "enterprise",
        "企业 Enterprise",
        'SHOW TAG VALUES FROM "energy" WITH KEY = "enterprise" WHERE '
        + filters(*county_industry()),
        multi=multi,
    )


def carrier_variable() -> dash.QueryVariable:
    return query_variable(
        "carrier",
        "能源品种 Carrier",
        'SHOW TAG VALUES FROM "energy" WITH KEY = "carrier" WHERE "carrier" != \'total\'',
        multi=True,
    )


def period_variable() -> dash.CustomVariable:
    options = [("month", "月 month"), ("quarter", "季 quarter"), ("ytd", "年累计 year to date"),
               ("year", "年 year")]  # fmt: skip
    return (
        dash.CustomVariable("period")
        .label("强度周期 Intensity period")
        .values(",".join(v for v, _ in options))
        .current(dm.VariableOption(text="month", value="month", selected=True))
        .options([dm.VariableOption(text=v, value=v, selected=v == "month") for v, _ in options])
    )


def base_dashboard(uid: str, name: str, description: str, site: Site) -> dash.Dashboard:
    """A dashboard with greenmon's common settings: folder tags, local time zone, a week."""
    return (
        dash.Dashboard(name)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .timezone(site.tz)
        .time("now-7d", "now")
        .refresh("5m")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .readonly()
    )


def registry_query(site: Site, ref_id: str = "R") -> testdata.Dataquery:
    """The registry facts as a TestData CSV query (see `Site.registry_csv`)."""
    return (
        testdata.Dataquery()
        .ref_id(ref_id)
        .datasource(REGISTRY)
        .scenario_id("csv_content")
        .csv_content(site.registry_csv())
    )


#: Bilingual table headers for the names greenmon's queries return.
COLUMNS = {
    "enterprise": "企业 enterprise",
    "county": "区县 county",
    "industry": "行业 industry",
    "rank": "排名 rank",
    "score": "得分 score",
    "passed": "结果 result",
    "gaps": "差距 gaps",
    "class": "分类 class",
}


def columns(*names: str, **extra: str) -> dict[str, str]:
    """A rename map: the `COLUMNS` headers of `names`, plus `extra` (name=header)."""
    return {**{n: COLUMNS[n] for n in names}, **extra}


def organize(
    exclude: Sequence[str] = ("time",), rename: dict[str, str] | None = None
) -> dm.DataTransformerConfig:
    """Grafana's "organize fields" transformation: hide and rename table columns."""
    return dm.DataTransformerConfig(
        id_val="organize",
        options={"excludeByName": dict.fromkeys(exclude, True), "renameByName": rename or {}},
    )


def join_on_enterprise(mode: str = "inner") -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(
        id_val="joinByField", options={"byField": "enterprise", "mode": mode}
    )
