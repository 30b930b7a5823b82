"""The InfluxQL text of greenmon's panels, in one place, on the measurements of DESIGN §3.

Every query reads what the aggregator (``energy``, ``meter_energy``, ``intensity``), the
ingestor (``meter_reading``, ``greenmon_ingest``) or the rules (``alert``, ``screening``,
``efficiency_class``) write, and nothing else; ``tests/dashboards`` parses each one against
that contract and runs it on a real influxd holding a simulated day.

Grafana fills in, before InfluxDB sees a query: ``$timeFilter`` (the panel's time range),
``${__from}``/``${__to}`` (the dashboard range in epoch ms), ``$__interval`` and the template
variables (``/^$county$/`` becomes a regex of the chosen values, ``.*`` for all).
"""

from __future__ import annotations

from greenmon.dashboards.influxql import tag_equals, tag_matches

__all__ = [
    "ALERT_LATEST",
    "INTENSITY_LOOKBACK",
    "alert_count",
    "daily_total",
    "grouped_energy",
    "total_energy",
]

TIME = "$timeFilter"
#: Intensity points sit at the start of their period (a year's on 1 January): look back a year
#: from the end of the range and take the latest.
INTENSITY_LOOKBACK = "time >= ${__from}ms - 366d AND time <= ${__to}ms"
#: Current alert state: the latest transition at or before the end of the range, however old.
ALERT_LATEST = "time <= ${__to}ms"

_TOTAL_1D = [tag_equals("window", "1d"), tag_equals("carrier", "total")]
_AREA = [tag_matches("county", "county"), tag_matches("industry", "industry")]


def _where(*clauses: str) -> str:
    return " AND ".join(clauses)


def total_energy(field: str, scale: str = " / 1000", alias: str = "value") -> str:
    """One figure over the panel's range: the city's (filtered) daily ``carrier=total`` sum."""
    return (
        f'SELECT sum("{field}"){scale} AS "{alias}" FROM "energy" '
        f"WHERE {_where(*_TOTAL_1D, *_AREA, TIME)}"
    )


def daily_total(field: str, by: str, tz: str) -> str:
    """Per local day and per `by` tag (county, industry): the daily total in tonnes."""
    return (
        f'SELECT sum("{field}") / 1000 FROM "energy" WHERE {_where(*_TOTAL_1D, *_AREA, TIME)} '
        f"GROUP BY time(1d), \"{by}\" fill(none) tz('{tz}')"
    )


def grouped_energy(by: str) -> str:
    """Per `by` tag over the range: comprehensive and double-control tce and tCO₂ (a table)."""
    return (
        'SELECT sum("kgce") / 1000 AS "tce", sum("double_control_kgce") / 1000 AS "dc_tce", '
        f'sum("kgco2") / 1000 AS "tco2" FROM "energy" WHERE {_where(*_TOTAL_1D, *_AREA, TIME)} '
        f'GROUP BY "{by}"'
    )


def alert_count(level: str, scopes: str = "enterprise") -> str:
    """How many (subject, rule) pairs are now at `level`: red and yellow count firing alerts,
    green counts pairs whose latest transition resolved them or is green."""
    if level == "green":
        state = "(\"level\" = 'green' OR \"state\" = 'resolved')"
    else:
        state = f"\"level\" = '{level}' AND \"state\" = 'firing'"
    inner = (
        'SELECT last("level") AS "level", last("state") AS "state" FROM "alert" '
        f'WHERE "scope" =~ /^({scopes})$/ AND {tag_matches("rule", "rule")} AND {ALERT_LATEST} '
        'GROUP BY "subject", "rule"'
    )
    return f'SELECT count("level") AS "{level}" FROM ({inner}) WHERE {state}'
