"""Dashboards stage: Grafana datasource, dashboards and alert rules generated from code.

`generate` composes what Grafana gets (dashboards from `city`, `enterprise`, `screening`,
`alerts`, `health`; rules from `alert_rules`), `provisioning` writes it as files Grafana reads
at start, `push` upserts it over Grafana's HTTP API; `cli` holds the two commands.
"""

import warnings

# grafana-foundation-sdk warns on import that its v1 dashboard model is superseded by
# dashboardv2. greenmon writes v1 on purpose: it is what file provisioning and
# /api/dashboards/db take, and what Grafana's dashboard.jsonschema.json describes.
warnings.filterwarnings(
    "ignore", message="Prefer using dashboardv2.Dashboard instead", category=DeprecationWarning
)
