"""采集健康 · Ingest health: whether the readings get in, from ``greenmon_ingest``.

Panels, and the question each answers:

- *Rates*: how many MQTT messages and readings per second each ingestor receives, writes and
  rejects;
- *Rejects by reason*: why input was refused over the range (bad JSON, unknown meter, wrong
  enterprise, unit mismatch, ...; one ``rejected_<reason>`` counter per reason);
- *Spool depth*: how much is waiting on disk because InfluxDB was unavailable (should be 0);
- *Lag*: how far behind the device clocks the newest written reading is (seconds).

Every ingestor writes one ``greenmon_ingest`` point (tag ``client_id``) every few seconds;
counters are running totals since the ingestor started, so rates are non-negative
derivatives (a restart resets them without a negative spike).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard as dm

from greenmon.dashboards.common import base_dashboard, query_variable, title
from greenmon.dashboards.influxql import InfluxQL, tag_matches
from greenmon.dashboards.panels import bar_gauge, stat_panel, thresholds, time_series
from greenmon.dashboards.site import Site
from greenmon.ingest.metrics import REJECT_REASONS

__all__ = ["UID", "health_dashboard"]

UID = "greenmon-ingest"
_CLIENT = tag_matches("client_id", "client_id")


def client_variable() -> dash.QueryVariable:
    return query_variable(
        "client_id",
        "采集进程 Ingestor",
        'SHOW TAG VALUES FROM "greenmon_ingest" WITH KEY = "client_id"',
        multi=True,
        refresh=dm.VariableRefresh.ON_TIME_RANGE_CHANGED,
    )


def health_dashboard(site: Site) -> dash.Dashboard:
    rates = (
        'SELECT non_negative_derivative(last("messages"), 1s) AS "messages", '
        'non_negative_derivative(last("received"), 1s) AS "received", '
        'non_negative_derivative(last("written"), 1s) AS "written", '
        'non_negative_derivative(last("rejected"), 1s) AS "rejected" '
        f'FROM "greenmon_ingest" WHERE {_CLIENT} AND $timeFilter '
        'GROUP BY time($__interval), "client_id" fill(none)'
    )
    by_reason = (
        "SELECT "
        + ", ".join(f'spread("rejected_{r}") AS "{r}"' for r in REJECT_REASONS)
        + f' FROM "greenmon_ingest" WHERE {_CLIENT} AND $timeFilter GROUP BY "client_id"'
    )
    spool_now = (
        f'SELECT last("spool_depth") FROM "greenmon_ingest" WHERE {_CLIENT} AND $timeFilter '
        'GROUP BY "client_id"'
    )
    spool = (
        f'SELECT max("spool_depth") FROM "greenmon_ingest" WHERE {_CLIENT} AND $timeFilter '
        'GROUP BY time($__interval), "client_id" fill(none)'
    )
    lag = (
        f'SELECT max("lag_s") FROM "greenmon_ingest" WHERE {_CLIENT} AND $timeFilter '
        'GROUP BY time($__interval), "client_id" fill(none)'
    )
    return (
        base_dashboard(
            UID,
            title("采集健康", "Ingest health"),
            "Messages and readings in, written and rejected, spool depth and lag of every "
            "greenmon ingestor (greenmon).",
            site,
        )
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(client_variable())
        .with_panel(
            time_series(
                title("接收、写入与拒收速率", "Rates: in, written, rejected"),
                "Per ingestor: MQTT messages and readings received, readings written to "
                "InfluxDB and readings or messages rejected, per second.",
                "suffix: /s",
                span=16,
            ).with_target(InfluxQL(rates).alias("$tag_client_id $col"))
        )
        .with_panel(
            bar_gauge(
                title("拒收原因", "Rejects by reason"),
                "Readings or messages refused over the selected range, by reason and "
                "ingestor. Every refused one is also in the dead-letter file, with its "
                "payload.",
                "none",
                span=8,
                calc="sum",
            ).with_target(InfluxQL(by_reason).alias("$col ($tag_client_id)"))
        )
        .with_panel(
            stat_panel(
                title("缓存积压", "Spool depth now"),
                "Records waiting in each ingestor's disk spool because InfluxDB refused or "
                "could not be reached; they are written when it answers again. Should be 0.",
                "none",
            )
            .thresholds(thresholds((None, "green"), (1.0, "orange")))
            .with_target(InfluxQL(spool_now).alias("$tag_client_id"))
        )
        .with_panel(
            time_series(
                title("缓存积压变化", "Spool depth"),
                "Spooled records per ingestor over time.",
                "none",
                span=8,
            ).with_target(InfluxQL(spool).alias("$tag_client_id"))
        )
        .with_panel(
            time_series(
                title("延迟", "Lag behind the meters"),
                "Wall-clock time minus the device time of the newest reading written, per "
                "ingestor (s): how stale the freshest data is. Gateways that buffer and send "
                "late raise it.",
                "s",
                span=8,
            ).with_target(InfluxQL(lag).alias("$tag_client_id"))
        )
    )
