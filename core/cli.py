"""The `greenmon` command line: one entry point, one sub-app per stage.

Each command lives next to the code it drives; this module only assembles them and turns
greenmon's own errors into readable messages (see `greenmon.cli_common`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from greenmon import __version__
from greenmon.aggregator.bench import register_bench as register_aggregate_bench
from greenmon.aggregator.cli import register as register_aggregate
from greenmon.cli_common import (
    run_guarded,
)
from greenmon.dashboards.cli import register as register_dashboards
from greenmon.demo.cli import register as register_demo
from greenmon.deploy.cli import db_app, services_app
from greenmon.ingest.cli import register as register_ingest
from greenmon.ingest.cli import register_bench as register_ingest_bench
from greenmon.rules.cli import register as register_rules
from greenmon.rules.cli import register_bench as register_rules_bench
from greenmon.simulators.cli import register as register_simulate
from greenmon.simulators.cli import register_bench as register_simulate_bench

app = typer.Typer(
    name="greenmon",
    help="Streaming energy and green-manufacturing monitor: MQTT meter readings into "
    "InfluxDB, standard coal (tce), carbon and intensity against the provincial reference.\n\n"
    "Start here: `greenmon services up` starts a local Mosquitto and InfluxDB; every other "
    "command finds them by itself.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(services_app, name="services")
app.add_typer(db_app, name="db")
register_simulate(app)
register_ingest(app)
register_aggregate(app)
register_dashboards(app)
register_rules(app)
register_demo(app)

bench_app = typer.Typer(
    help="Benchmarks that print figures measured on this machine, in one run, against the "
    "limits of the real parts (not timed tests). Each starts its own services when it needs "
    "them.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
register_ingest_bench(bench_app)
register_simulate_bench(bench_app)
register_aggregate_bench(bench_app)
register_rules_bench(bench_app)
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"greenmon {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """greenmon command line."""


def main() -> None:
    run_guarded(app)


if __name__ == "__main__":
    main()
