"""The rules stage's commands, registered by `greenmon.cli` (a thin file: each family of rules
owns its commands in its own module): ``alerts`` (issue 10), ``screen`` and ``classify``
(issue 11)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from greenmon.rules.alerts.cli import register as register_alerts
    from greenmon.rules.screening.cli import register as register_screening

    register_alerts(app)
    register_screening(app)


def register_bench(bench: typer.Typer) -> None:
    from greenmon.rules.alerts.bench import register_bench as register_alerts_bench
    from greenmon.rules.screening.bench import register_bench as register_screening_bench

    register_alerts_bench(bench)
    register_screening_bench(bench)
