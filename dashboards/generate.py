"""Everything greenmon gives Grafana, as plain JSON-ready dicts: dashboards, alert rules and the
data sources, for a `Site`. The provisioning writer and the pusher both start here.

Dashboards are built with grafana-foundation-sdk, encoded with its JSON encoder (keys sorted)
and given panel ids (1, 2, ... in layout order; Grafana needs them unique within a
dashboard). The same inputs always give the same dicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from greenmon.dashboards.alert_rules import RuleSet, build_rules
from greenmon.dashboards.alerts import alerts_dashboard
from greenmon.dashboards.city import city_dashboard
from greenmon.dashboards.common import (
    INFLUX_NAME,
    INFLUX_UID,
    REGISTRY_NAME,
    REGISTRY_TYPE,
    REGISTRY_UID,
)
from greenmon.dashboards.enterprise import enterprise_dashboard
from greenmon.dashboards.health import health_dashboard
from greenmon.dashboards.influxql import INFLUXDB_TYPE
from greenmon.dashboards.screening import screening_dashboard
from greenmon.dashboards.site import EnterpriseInfo, Site

__all__ = [
    "AuthKind",
    "Bundle",
    "DatasourceSpec",
    "build_bundle",
    "dashboard_json",
    "enterprise_dashboard_json",
]

AuthKind = Literal["none", "basic", "token"]


def dashboard_json(builder: dash.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, panel ids assigned."""
    model: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    next_id = 1
    for panel in model.get("panels", []):
        panel["id"] = next_id
        next_id += 1
        for inner in panel.get("panels", []):
            inner["id"] = next_id
            next_id += 1
    return model


def enterprise_dashboard_json(site: Site, enterprise: EnterpriseInfo) -> dict[str, Any]:
    return dashboard_json(enterprise_dashboard(site, enterprise))


@dataclass(frozen=True)
class DatasourceSpec:
    """How Grafana reaches InfluxDB. `secret` is the password (basic) or token (token): a
    ``$__env{…}`` reference in provisioning files, the real value only when pushing."""

    url: str
    database: str
    auth: AuthKind = "none"
    username: str | None = None
    secret: str | None = None

    def influx(self) -> dict[str, Any]:
        """The InfluxDB (InfluxQL) data source, in the HTTP API's field names."""
        json_data: dict[str, Any] = {
            "dbName": self.database,
            "httpMode": "POST",
            "version": "InfluxQL",
        }
        ds: dict[str, Any] = {
            "name": INFLUX_NAME,
            "type": INFLUXDB_TYPE,
            "uid": INFLUX_UID,
            "access": "proxy",
            "url": self.url,
            "isDefault": False,
            "jsonData": json_data,
        }
        if self.auth == "basic":
            # InfluxDB 1.x: user and password (InfluxDB 3 also takes a token as the password).
            ds["user"] = self.username or ""
            if self.secret is not None:
                ds["secureJsonData"] = {"password": self.secret}
        elif self.auth == "token":
            # InfluxDB 2.x/3.x through their v1 API: InfluxQL with an Authorization header.
            json_data["httpHeaderName1"] = "Authorization"
            if self.secret is not None:
                ds["secureJsonData"] = {"httpHeaderValue1": f"Token {self.secret}"}
        return ds

    def registry(self) -> dict[str, Any]:
        """Grafana's built-in TestData source, which serves the registry facts embedded in
        the dashboards (coordinates, quotas, targets)."""
        return {
            "name": REGISTRY_NAME,
            "type": REGISTRY_TYPE,
            "uid": REGISTRY_UID,
            "access": "proxy",
            "isDefault": False,
        }


@dataclass(frozen=True)
class Bundle:
    """What a build produces: dashboards by uid (in menu order), the alert rule set, and notes
    on what was left out and why."""

    dashboards: dict[str, dict[str, Any]]
    rules: RuleSet
    notes: tuple[str, ...] = field(default_factory=tuple)


def build_bundle(site: Site) -> Bundle:
    builders = (
        city_dashboard(site),
        enterprise_dashboard(site),
        screening_dashboard(site),
        alerts_dashboard(site),
        health_dashboard(site),
    )
    dashboards = {d["uid"]: d for d in (dashboard_json(b) for b in builders)}
    rules = build_rules(site)
    notes: list[str] = []
    if not site.has_registry:
        notes.append(
            "no registry: no map, no quota or target panels, no capacity alert rules, meter "
            "rates in each carrier's reference unit (give --registry DIR)"
        )
    elif not any(e.located for e in site.enterprises):
        notes.append("no enterprise has latitude/longitude in enterprises.csv: no map")
    notes.extend(rules.skipped)
    return Bundle(dashboards=dashboards, rules=rules, notes=tuple(notes))
