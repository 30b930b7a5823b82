"""The `greenmon` command line: one entry point, one sub-app per stage.

Each command lives next to the code it drives; this module only assembles them and turns
greenmon's own errors into readable messages (see `greenmon.cli_common`).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from greenmon import __version__
from greenmon.aggregator.bench import register_bench as register_aggregate_bench
from greenmon.aggregator.cli import register as register_aggregate
from greenmon.cli_common import (
    JsonOption,
    console,
    err_console,
    print_json,
    progress_bars,
    run_guarded,
    service_options,
)
from greenmon.config import Settings
from greenmon.dashboards.cli import register as register_dashboards
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


@app.command("demo")
@service_options
def demo(
    settings: Settings,
    enterprises: Annotated[int, typer.Option(min=1, help="Simulated enterprises.")] = 30,
    days: Annotated[float, typer.Option(min=0.25, max=31, help="Simulated days.")] = 7.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the fleet and its faults.")] = 7,
    faults: Annotated[
        str, typer.Option(help="Fault rates: 'demo', 'none' or name=rate,... (simulate run).")
    ] = "demo",
    start: Annotated[str, typer.Option(help="First simulated local day.")] = "2025-06-02",
    json_out: JsonOption = False,
) -> None:
    """The whole chain end to end on the local services, in a few minutes.

    Starts the local Mosquitto and InfluxDB, generates a seeded fleet of Nantong factories,
    streams a simulated week of their meters through MQTT with faults, runs `greenmon ingest`
    and `greenmon aggregate --follow` while it streams, then prints readings ingested and
    rejected by reason, tce and kgCO2 by county and industry, the ten most and least
    energy-intensive enterprises against the provincial reference, and the city total
    against the simulators' ground truth. Writes to the database `greenmon_demo` unless
    `--database` says otherwise (it is emptied first).

    Example: `greenmon demo --enterprises 10 --days 2`
    """
    from greenmon.demo import DemoOptions, run_demo

    database = settings.database if settings.database != "greenmon" else "greenmon_demo"
    opts = DemoOptions(enterprises=enterprises, days=days, seed=seed, faults=faults,
                       start=start, database=database)  # fmt: skip
    bar, progress = progress_bars()

    def say(msg: str) -> None:
        err_console.log(msg)

    with bar:
        summary = run_demo(settings, opts, say, progress)
    if json_out:
        print_json(summary)
        return
    _print_demo(summary)


def _print_demo(s: dict[str, Any]) -> None:
    from rich.table import Table

    ing = s["ingest"]
    console.print(
        f"[bold]{s['enterprises']} enterprises, {s['meters']} meters[/], "
        f"{s['range']['from']} .. {s['range']['to']}: {s['messages_published']:,} messages, "
        f"{ing['readings_written']:,} readings written; rejected by reason: "
        f"{ing['rejected_by_reason']} ({ing['malformed_injected']} malformed messages injected)"
    )
    for key, title in (("energy_by_county", "county"), ("energy_by_industry", "industry")):
        t = Table(title, "enterprises", "tce", "kgCO2", title=f"energy by {title}")
        for r in s[key]:
            t.add_row(
                str(r[title]), str(r["enterprises"]), f"{r['tce']:,.3f}", f"{r['kgco2']:,.0f}"
            )
        console.print(t)
    for key, title in (("most_intensive", "ten most energy-intensive"),
                       ("least_intensive", "ten least energy-intensive")):  # fmt: skip
        t = Table("enterprise", "industry", "tce/10k yuan VA", "reference", "ratio",
                  title=f"{title} (pro-rated to the days covered)")  # fmt: skip
        for r in s[key]:
            t.add_row(r["enterprise"], r["industry"], f"{r['tce_per_10k_yuan_va']:.4f}",
                      f"{r['reference']:.4f}", f"{r['ratio']:.2f}")  # fmt: skip
        console.print(t)
    console.print(f"reference: {s['intensity_reference']}")
    c = s["city_total"]
    console.print(
        f"[bold]city total[/]: {c['tce']:,.3f} tce computed vs {c['truth_tce']:,.3f} tce true "
        f"({c['difference_pct']}%); flagged readings: {s['flagged_readings']}; "
        f"{s['seconds']} s; files in {s['work_dir']}"
    )


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
