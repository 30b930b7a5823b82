"""Grafana-managed alert rules: conditions Grafana can watch with no greenmon process running.

One rule group, ``greenmon`` in the ``greenmon`` folder, evaluated every 5 minutes:

- ``greenmon-silent`` — *enterprise silent for an hour*: per enterprise (series by the
  ``enterprise`` tag of ``meter_reading``), the readings of the last hour, as a moving sum of
  10-minute counts over the last day, ``fill(0)`` so that a silent enterprise is a 0 and not a
  missing series; fires below 1. An enterprise silent for more than the day leaves the query,
  and the whole city silent is Grafana's "no data" state.
- ``greenmon-cap-<enterprise>`` — *power above the contracted capacity*, one rule per enterprise
  whose registry row has ``contracted_capacity_kw``: the sum of its boundary electricity
  meters' 15-minute mean power (register deltas × multiplier × unit → kWh × 4, or interval
  readings likewise), computed from the raw readings; fires when the highest 15-minute value
  of the last half hour is above the capacity (China bills maximum demand on 15-minute means).

Labels a notification policy can route on: ``greenmon=grafana``, ``severity``, ``rule``, and
``enterprise``/``county`` (the silent rule's ``enterprise`` label comes from the series).
Rules are built with grafana-foundation-sdk (`alerting.Rule`, server-side ``reduce`` and
``threshold`` expressions) and shaped two ways: the provisioning API's ``AlertRuleGroup`` and
the file-provisioning group of ``alerting/greenmon.yaml``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as am

from greenmon.dashboards.common import FOLDER_TITLE, FOLDER_UID, INFLUX_UID, enterprise_uid
from greenmon.dashboards.influxql import InfluxQL, literal
from greenmon.dashboards.site import EnterpriseInfo, MeterRow, Site
from greenmon.units import conversion_factor

__all__ = ["GROUP", "INTERVAL_S", "RuleSet", "build_rules"]

GROUP = "greenmon"
INTERVAL_S = 300
ORG_ID = 1
SILENT_UID = "greenmon-silent"
_EXPR = "__expr__"


@dataclass(frozen=True)
class RuleSet:
    """The rules (as the SDK's JSON: ``folderUID``, ``ruleGroup``, ``orgID`` included) and
    what was left out and why."""

    rules: tuple[dict[str, Any], ...]
    skipped: tuple[str, ...] = ()

    def api_group(self) -> dict[str, Any]:
        """Body of ``PUT /api/v1/provisioning/folder/{folder}/rule-groups/{group}``."""
        return {
            "title": GROUP,
            "folderUid": FOLDER_UID,
            "interval": INTERVAL_S,
            "rules": list(self.rules),
        }

    def provisioning(self) -> dict[str, Any]:
        """``alerting/greenmon.yaml``: Grafana's file-provisioning format for rule groups."""
        keys = ("uid", "title", "condition", "data", "noDataState", "execErrState", "for",
                "annotations", "labels", "isPaused")  # fmt: skip
        return {
            "apiVersion": 1,
            "groups": [
                {
                    "orgId": ORG_ID,
                    "name": GROUP,
                    "folder": FOLDER_TITLE,
                    "interval": f"{INTERVAL_S // 60}m",
                    "rules": [{k: r[k] for k in keys if k in r} for r in self.rules],
                }
            ],
        }


def _query(ref_id: str, influxql: str, seconds: int) -> alerting.Query:
    return (
        alerting.Query(ref_id)
        .datasource_uid(INFLUX_UID)
        .relative_time_range(am.RelativeTimeRange(from_val=seconds, to=0))
        .model(InfluxQL(influxql).ref_id(ref_id))
    )


def _reduce(ref_id: str, of: str, reducer: str) -> alerting.Query:
    return (
        alerting.Query(ref_id)
        .datasource_uid(_EXPR)
        .model(
            expr.TypeReduce()
            .ref_id(ref_id)
            .expression(of)
            .reducer(reducer)  # type: ignore[arg-type]
            .settings(expr.ExprTypeReduceSettings().mode("dropNN"))
        )
    )


def _threshold(ref_id: str, of: str, op: str, value: float) -> alerting.Query:
    return (
        alerting.Query(ref_id)
        .datasource_uid(_EXPR)
        .model(
            expr.TypeThreshold()
            .ref_id(ref_id)
            .expression(of)
            .conditions(
                [
                    expr.ExprTypeThresholdConditions().evaluator(
                        expr.ExprTypeThresholdConditionsEvaluator().type(op).params([value])  # type: ignore[arg-type]
                    )
                ]
            )
        )
    )


def _rule(uid: str, name: str) -> alerting.Rule:
    return (
        alerting.Rule(name)
        .uid(uid)
        .folder_uid(FOLDER_UID)
        .rule_group(GROUP)
        .org_id(ORG_ID)
        .condition("C")
        .exec_err_state("Error")
        .is_paused(False)
    )


def silent_rule(source: str = '"raw"."meter_reading"') -> alerting.Rule:
    readings = (
        'SELECT moving_average(count("value"), 6) * 6 AS "readings_last_hour" '
        f'FROM {source} WHERE $timeFilter GROUP BY time(10m), "enterprise" fill(0)'
    )
    return (
        _rule(SILENT_UID, "企业一小时无数据 Enterprise silent for an hour")
        .with_query(_query("A", readings, 86_400))
        .with_query(_reduce("B", "A", "last"))
        .with_query(_threshold("C", "B", "lt", 1))
        .for_val("0s")
        .no_data_state("NoData")
        .labels({"greenmon": "grafana", "severity": "warning", "rule": "enterprise_silent"})
        .annotations(
            {
                "summary": "{{ $labels.enterprise }}: no meter reading for an hour",
                "description": "No reading from any of the enterprise's meters reached InfluxDB "
                "in the last hour (readings in the last hour: {{ $values.B }}). Check the "
                "gateway, its network and the ingestor (Ingest health dashboard).",
            }
        )
    )


def _power_query(meters: list[MeterRow], source: str) -> str:
    """15-minute mean power (kW) of `meters`, summed."""
    parts = []
    for m in meters:
        k = m.multiplier * float(conversion_factor(m.unit, "kWh")) * 4  # kWh per 15 min -> kW
        value = 'non_negative_difference(last("value"))' if m.kind == "register" else 'sum("value")'
        parts.append(
            f'(SELECT {value} * {k:.12g} AS "kw" FROM {source} WHERE '
            f'"meter" = {literal(m.meter_id)} AND $timeFilter GROUP BY time(15m))'
        )
    return (
        f'SELECT sum("kw") AS "kw" FROM {", ".join(parts)} WHERE $timeFilter '
        "GROUP BY time(15m) fill(none)"
    )


def capacity_rule(
    enterprise: EnterpriseInfo, meters: list[MeterRow], source: str = '"raw"."meter_reading"'
) -> alerting.Rule:
    capacity = enterprise.contracted_capacity_kw
    assert capacity is not None
    return (
        _rule(
            enterprise_uid("greenmon-cap", enterprise.enterprise_id),
            f"超合同容量 Power above contracted capacity: {enterprise.enterprise_id}",
        )
        .with_query(_query("A", _power_query(meters, source), 1800))
        .with_query(_reduce("B", "A", "max"))
        .with_query(_threshold("C", "B", "gt", capacity))
        .for_val("0s")
        .no_data_state("OK")
        .labels(
            {
                "greenmon": "grafana",
                "severity": "warning",
                "rule": "contracted_capacity",
                "enterprise": enterprise.enterprise_id,
                "county": enterprise.county,
            }
        )
        .annotations(
            {
                "summary": f"{enterprise.name} ({enterprise.enterprise_id}): electric power "
                f"above the contracted {capacity:g} kW",
                "description": "Highest 15-minute mean power of the boundary electricity "
                "meters in the last half hour: {{ $values.B }} kW, contracted "
                f"{capacity:g} kW (enterprises.csv).",
            }
        )
    )


def build_rules(site: Site) -> RuleSet:
    """The group's rules for `site` (the capacity rules need the registry)."""
    rules = [silent_rule(site.readings)]
    skipped: list[str] = []
    for ent in site.enterprises:
        if ent.contracted_capacity_kw is None:
            continue
        meters = [
            m
            for m in site.meters
            if m.enterprise_id == ent.enterprise_id
            and m.role == "boundary"
            and m.carrier == "electricity"
        ]
        if not meters:
            skipped.append(
                f"{ent.enterprise_id}: contracted_capacity_kw given but no boundary "
                "electricity meter in meters.csv"
            )
            continue
        rules.append(capacity_rule(ent, meters, site.readings))
    encoded = tuple(json.loads(JSONEncoder(sort_keys=True).encode(r.build())) for r in rules)
    return RuleSet(rules=encoded, skipped=tuple(skipped))
