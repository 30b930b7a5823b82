"""Double-control alerts: levels per enterprise, county and city, sudden-change and
data-quality alerts, a persisted lifecycle and sinks (`greenmon alerts check|watch|list`).

Modules, one job each:

- `rulefile` — the shape of ``alerts.toml`` (thresholds, tolerances, durations), validated once;
- `targets` — quotas and intensity targets per subject: the registry's enterprises, the
  optional ``targets.csv``, or the sum of a county's enterprises;
- `inputs` — what is read from InfluxDB (daily ``energy``, meter-day completeness, the newest
  reading per meter) as Polars frames;
- `evaluate` — pure Polars: the barometer levels and every rule's condition, as of a moment;
- `lifecycle` — the transition table (pending -> firing -> resolved) as a pure function;
- `store` — the SQLite state, transition history and sink outbox in the runtime directory;
- `sinks`, `webhook` — InfluxDB, MQTT retained state and webhooks (generic, DingTalk, WeCom);
- `delivery` — drains the outbox into the sinks with retries, never blocking evaluation;
- `service` — one evaluation end to end, and the watch loop; `cli`, `bench` — the commands.
"""
