"""`greenmon demo`: the command, and the summary as tables."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from greenmon.cli_common import (
    JsonOption,
    console,
    err_console,
    print_json,
    progress_bars,
    service_options,
)
from greenmon.config import Settings

_STYLE = {"red": "bold red", "yellow": "yellow", "green": "green"}


def demo_cmd(
    settings: Settings,
    enterprises: Annotated[int, typer.Option(min=1, max=999, help="Simulated enterprises.")] = 60,
    days: Annotated[
        int,
        typer.Option(
            min=0,
            max=31,
            help="Live days streamed through MQTT before today (today so far is streamed too).",
        ),
    ] = 7,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the fleet and its faults.")] = 7,
    faults: Annotated[
        str, typer.Option(help="Fault rates: 'demo', 'none' or name=rate,... (simulate run).")
    ] = "demo",
    history: Annotated[
        str,
        typer.Option(
            help="'full': the year before and the year to date exist before the live days "
            "(hourly readings of the counted meters, written directly); 'none': live days only.",
        ),
    ] = "full",
    json_out: JsonOption = False,
) -> None:
    """The whole chain end to end on the local services, in a few minutes.

    Starts the local Mosquitto and InfluxDB and builds a seeded fleet of Nantong factories on
    purpose (some over their energy quota, a few green-factory leaders, one gateway that goes
    silent). Writes last year and this year to date as hourly readings and aggregates them;
    then streams the last `--days` days up to now through MQTT with faults while `greenmon
    ingest`, `greenmon aggregate --follow` and `greenmon alerts watch` run; then runs
    `greenmon alerts check`, `greenmon screen` and `greenmon classify` (with HTML reports) and
    `greenmon dashboards build`. Prints readings ingested and rejected, energy by county and
    industry, intensity against the provincial reference, the alert levels with the red
    enterprises and why, the data-quality alerts, the top green-factory candidates, the
    efficiency classes, the plan indicators, the city totals against the simulators' ground
    truth, and where the reports and the Grafana provisioning tree are.

    Writes to the database `greenmon_demo` unless `--database` says otherwise (it is emptied
    first). The services stay up: explore, then `greenmon services down`.

    Example: `greenmon demo --enterprises 20 --days 2`
    """
    from greenmon.demo.errors import DemoError
    from greenmon.demo.run import DemoOptions, run_demo

    if history not in ("full", "none"):
        raise DemoError("--history: use full or none")
    database = settings.database if settings.database != "greenmon" else "greenmon_demo"
    opts = DemoOptions(enterprises=enterprises, days=days, seed=seed, faults=faults,
                       database=database, history=history)  # fmt: skip
    bar, progress = progress_bars()

    def say(msg: str) -> None:
        err_console.log(msg)

    with bar:
        summary = run_demo(settings, opts, say, progress)
    if json_out:
        print_json(summary)
        return
    print_summary(summary)


def _energy_tables(s: dict[str, Any]) -> None:
    for key, title in (("energy_by_county", "county"), ("energy_by_industry", "industry")):
        t = Table(title, "enterprises", "tce", "kgCO2", title=f"live days: energy by {title}")
        for r in s[key][:10]:
            t.add_row(
                str(r[title]), str(r["enterprises"]), f"{r['tce']:,.3f}", f"{r['kgco2']:,.0f}"
            )
        if len(s[key]) > 10:
            t.add_row(f"... {len(s[key]) - 10} more (--json)", "", "", "")
        console.print(t)
    title = "five most energy-intensive this month (pro-rated to the days covered)"
    t = Table("enterprise", "industry", "tce/10k yuan VA", "reference", "ratio", title=title)
    for r in s["most_intensive"][:5]:
        t.add_row(r["enterprise"], r["industry"], f"{r['tce_per_10k_yuan_va']:.4f}",
                  f"{r['reference']:.4f}", f"{r['ratio']:.2f}")  # fmt: skip
    console.print(t)
    console.print(Text(f"reference: {s['intensity_reference']}", style="dim"), soft_wrap=True)


def _alert_lines(s: dict[str, Any]) -> None:
    a = s["alerts"]
    levels = ", ".join(
        f"{scope}: {v['red']} red, {v['yellow']} yellow, {v['green']} green"
        for scope, v in a["levels"].items()
    )
    console.print(Text.assemble(("alerts (double control, as of now) ", "bold"), levels))
    for r in a["red"]:
        who = f"{r['subject']} {r.get('name') or ''}".strip()
        console.print(Text.assemble(("  red ", _STYLE["red"]), who), highlight=False)
        for why in r["why"][:1]:  # what makes it red comes first
            console.print(Text(f"      {why}", style="dim"), highlight=False, soft_wrap=True)
    for q in a["data_quality"]:
        console.print(
            Text.assemble(
                (f"  {q['level']} ", _STYLE.get(q["level"], "")),
                f"{q['subject']} {q['rule']}: ",
                (q["message"], "dim"),
            ),
            highlight=False,
            soft_wrap=True,
        )


def _period(p: Any) -> str:
    if not isinstance(p, dict):
        return str(p)
    return f"{p['year']}, {p['from']} .. {p['to']}" + ("" if p.get("whole_year") else " to date")


def _screening_lines(s: dict[str, Any]) -> None:
    sc = s["screening"]
    t = Table("rank", "enterprise", "county", "score", "passed",
              title=f"green-factory candidates ({_period(sc['period'])}): top 5 of "
              f"{s['enterprises']}, {sc['passed']} pass")  # fmt: skip
    for c in sc["top"][:5]:
        t.add_row(str(c["rank"]), f"{c['enterprise']} {c.get('name') or ''}",
                  str(c.get("county") or ""), f"{c['score']}",
                  "yes" if c["passed"] else "no")  # fmt: skip
    console.print(t)
    cl = s["classes"]
    console.print(
        f"[bold]efficiency classes[/] ({_period(cl['period'])}): "
        + ", ".join(f"{k} {v}" for k, v in cl["counts"].items())
        + f" (of {cl['enterprises']})"
    )
    plan = s.get("plan") or {}
    if plan:
        console.print(f"[bold]plan indicators[/] ({plan.get('plan_en') or plan.get('plan')})")
        i9, i10 = plan.get("indicator_9") or {}, plan.get("indicator_10") or {}
        if i9.get("tce_per_10k_yuan") is not None:
            line = (
                f"  9 {i9['name_en']}: {i9['tce_per_10k_yuan']:.4f} tce/10k yuan vs "
                f"{i9['reference_tce_per_10k_yuan']} ({i9['verdict']})"
            )
            console.print(Text(line), highlight=False, soft_wrap=True)
        if i10:
            line = (
                f"  10 {i10['name_en']}: new candidates vs the target "
                f"{i10['new_candidates_vs_target']}; cumulative {i10['cumulative_vs_target']}"
            )
            console.print(Text(line), highlight=False, soft_wrap=True)


def print_summary(s: dict[str, Any]) -> None:
    ing = s["ingest"]
    h = s.get("history") or {}
    console.print(
        f"[bold]{s['enterprises']} enterprises, {s['meters']} meters, {s['gateways']} gateways[/]"
    )
    if h.get("readings"):
        console.print(
            f"history {h['from'][:10]} .. {h['to'][:10]}: {h['readings']:,} hourly readings of "
            f"{h['meters']} counted meters written, aggregated in {h['aggregate_seconds']} s"
        )
    console.print(
        f"live {s['range']['from']} .. {s['range']['to']}: {s['messages_published']:,} "
        f"messages, {ing['readings_written']:,} readings written; rejected by reason: "
        f"{ing['rejected_by_reason']} ({ing['malformed_injected']} malformed messages injected)"
    )
    o = s.get("outage")
    if o:
        console.print(
            f"outage: gateway {o['gateway']} ({o['enterprise']}) silent since {o['from']} "
            f"({o['messages_removed']} messages not sent)"
        )
    w = s["alerts_watch"]
    console.print(
        f"aggregate --follow: {s['aggregate_follow'].get('rounds', '-')} rounds; alerts watch: "
        f"{w['evaluations']} evaluations, {w['transitions']} transitions"
    )
    _energy_tables(s)
    _alert_lines(s)
    _screening_lines(s)
    c = s["city_total"]
    console.print(
        f"[bold]city, live days[/]: {c['tce']:,.3f} tce computed vs {c['truth_tce']:,.3f} tce "
        f"true ({c['difference_pct']}%); {c['unreported_tce']:,.3f} tce not reported yet "
        f"(the outage); flagged readings: {s['flagged_readings']}"
    )
    y = s.get("year_to_date")
    if y:
        console.print(
            f"[bold]city, year to date[/]: {y['tce']:,.3f} tce computed vs "
            f"{y['truth_tce']:,.3f} tce true ({y['difference_pct']}%)"
        )
    console.print(f"reports: {s['reports']['screening']}")
    console.print(f"         {s['reports']['classes']}")
    d = s["dashboards"]
    console.print(
        f"Grafana provisioning tree: {s['provisioning']} ({len(d['dashboards'])} dashboards, "
        f"{d['alert_rules']} alert rule(s))"
    )
    console.print(
        f"{s['seconds']} s. Services stay up (database {s['database']}); files in "
        f"{s['work_dir']}; stop them with: {s['services']['stop']}"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(service_options(demo_cmd))
