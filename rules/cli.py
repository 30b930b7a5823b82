"""The rules stage's commands, registered by `greenmon.cli`: ``alerts`` (issue 10)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from greenmon.rules.alerts.cli import register as register_alerts

    register_alerts(app)


def register_bench(bench: typer.Typer) -> None:
    from greenmon.rules.alerts.bench import register_bench as register_alerts_bench

    register_alerts_bench(bench)
