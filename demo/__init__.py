"""The demo stage: `greenmon demo`, the whole chain end to end on the local services.

It composes the stages (simulators, ingest, aggregator, rules, dashboards) and so lives outside
the kernel: `fleet` (the cast, built on purpose), `history` (the year to date, hourly),
`live` (the live window and the gateway outage), `broker` (what a previous run left on the
broker), `run` (the orchestration), `summary` (what came out, against the ground truth),
`cli` (the command, registered by `greenmon.cli`).
"""
