"""`greenmon alerts check|watch|list`: double-control levels and alerts on the command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from rich.text import Text

from greenmon.cli_common import JsonOption, console, err_console, print_json, service_options
from greenmon.config import Settings
from greenmon.errors import ConfigError

if TYPE_CHECKING:
    from greenmon.rules.alerts.service import Outcome

alerts_app = typer.Typer(
    name="alerts",
    help="Energy double-control (能耗双控) alerts: red/yellow/green levels for every "
    "enterprise, county and the city, sudden-change and data-quality alerts, with a "
    "persisted lifecycle and sinks (InfluxDB, MQTT retained state, webhooks incl. DingTalk "
    "and WeCom).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

RulesOption = Annotated[
    Path | None,
    typer.Option(
        "--rules",
        help="Your alert rules (TOML), merged over the packaged alerts.toml: it holds only "
        "what it changes.",
        show_default="alerts.rules from the settings, else the packaged file",
    ),
]
_STYLE = {"red": "bold red", "yellow": "yellow", "green": "green"}
#: Rule names as the table shows them (the JSON and the sinks use the full names).
_SHORT = {
    "double_control_total": "total",
    "double_control_intensity": "intensity",
    "sudden_change": "sudden change",
    "data_completeness": "completeness",
    "gateway_silent": "gateway silent",
}


def _prepare(settings: Settings, *, need_registry: bool = True) -> Settings:
    from greenmon.config import read_services_state, resolve_local_services

    settings = resolve_local_services(settings, need_mqtt=False, need_influx=True)
    if settings.mqtt_url is None and settings.alerts.mqtt:
        state = read_services_state(settings.runtime_dir)
        if state is not None:
            settings = settings.model_copy(update={"mqtt_url": state.mqtt_url})
    if need_registry and settings.registry is None:
        raise ConfigError("registry: no registry directory given (--registry DIR)")
    return settings


def _as_of(value: str | None, tz: str) -> datetime:
    from greenmon.aggregator.cli import parse_moment

    return parse_moment(value, tz, "--as-of") if value else datetime.now(UTC)


def check_cmd(
    settings: Settings,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Judge as of this local day (its midnight: the days before it) or RFC 3339 "
            "instant; history and simulations are judged the same way.",
            show_default="now",
        ),
    ] = None,
    rules: RulesOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Judge and show; record no alert state, send nothing."),
    ] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Text form: list green enterprises too.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Evaluate once: every enterprise, county and the city as of a moment.

    Year to date in the local time zone: double-control consumption against the pro-rata
    quota and the projected year end, intensity against the target and last year; levels
    red / yellow / green after the NDRC barometer, why, and what it would take to return to
    green. Then the sudden-change and data-quality rules. Alert states go through their
    lifecycle (pending, firing, resolved) and are kept in the runtime directory; transitions
    go to InfluxDB (`alert`), MQTT (retained, `greenmon/v1/alerts/{scope}/{subject}`) and the
    configured webhooks. A sink that is down keeps its messages for the next run.

    Example: `greenmon alerts check --registry fleet/ --as-of 2025-06-03`

    Example: `greenmon alerts check --registry fleet/ --dry-run --json`
    """
    from greenmon.influx import InfluxClient
    from greenmon.registry import load_registry
    from greenmon.rules.alerts.delivery import Dispatcher
    from greenmon.rules.alerts.rulefile import load_alert_rules
    from greenmon.rules.alerts.service import evaluate_once, make_sinks, open_store

    settings = _prepare(settings)
    assert settings.registry is not None
    moment = _as_of(as_of, settings.timezone)
    loaded = load_alert_rules(rules or settings.alerts.rules)
    registry = load_registry(settings.registry)
    sinks, notes = make_sinks(settings)
    with open_store(settings) as store, InfluxClient.from_settings(settings) as client:
        with console.status("judging", spinner="dots") if not json_out else _nothing():
            outcome = evaluate_once(
                client, registry, loaded, store, settings, moment, sinks=sinks, dry_run=dry_run
            )
        reports = []
        if not dry_run and sinks:
            dispatcher = Dispatcher(store, sinks, max_age_s=settings.alerts.outbox_max_age_s)
            reports = dispatcher.deliver_once(settings.alerts.delivery_timeout_s)
    notes = [*notes, *outcome.notes]
    if json_out:
        print_json(outcome.objects)
        for note in notes:
            err_console.print(Text(note), highlight=False, soft_wrap=True)
        for r in reports:
            err_console.print(Text(_delivery_line(r.as_dict())), highlight=False, soft_wrap=True)
        return
    _print_check(outcome, show_all, settings.timezone)
    for note in notes:
        console.print(Text(note, style="dim"), soft_wrap=True)
    for r in reports:
        console.print(Text(_delivery_line(r.as_dict())), highlight=False, soft_wrap=True)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _delivery_line(r: dict[str, Any]) -> str:
    line = f"{r['description']}: {r['delivered']} delivered"
    if r["pending"]:
        line += f", {r['pending']} waiting for the next try"
        if r["error"]:
            line += f" (last failure: {r['error']})"
    return line


def _cell_total(o: dict[str, Any]) -> Text:
    t = o["total"]
    if t["ratio"] is None or t["projected_tce"] is None:
        return Text("not assessed", style="dim")
    return Text(
        f"{t['ytd_tce']:,.1f} of {t['prorata_quota_tce']:,.1f} pro-rata\n"
        f"→ {t['projected_tce']:,.0f} / {t['quota_tce']:,.0f} ({t['ratio']:.0%})",
        style=_STYLE.get(t["level"] or "", ""),
    )


def _cell_intensity(o: dict[str, Any]) -> Text:
    i = o["intensity"]
    if i["tce_per_10k_yuan"] is None:
        return Text("not assessed", style="dim")
    parts = [f"{i['tce_per_10k_yuan']:.4f}"]
    if i["target"] is not None:
        parts.append(f"target {i['target']:.4f}")
    if i["same_period_last_year"] is not None:
        parts.append(f"last yr {i['same_period_last_year']:.4f}")
    return Text("\n".join(parts), style=_STYLE.get(i["level"] or "", ""))


def _print_check(outcome: Outcome, show_all: bool, tz: str) -> None:
    objects = outcome.objects
    shown = [
        o
        for o in objects
        if show_all or o["scope"] != "enterprise" or o["level"] != "green" or o["alerts"]
    ]
    j = outcome.judgement
    through = objects[0]["data_through"] if objects else None
    title = (
        f"double control as of {j.as_of.astimezone(ZoneInfo(tz)).strftime('%Y-%m-%d %H:%M')} "
        f"({tz}): "
        f"{j.year} to {through or '-'} ({j.days_elapsed} of {j.days_in_year} days)"
    )
    table = Table(
        "level",
        "subject",
        "year to date tce → projected / quota",
        "intensity tce/10k yuan",
        "alerts",
        "to be green",
        title=title,
        show_lines=True,
    )
    for o in shown:
        who = f"{o['subject']}"
        if o["scope"] == "enterprise":
            who += f"\n{o.get('name') or ''}\n{o.get('county') or ''}"
        else:
            who += f"\n({o['scope']}, enterprises: {o.get('enterprises', 0)})"
        alerts = "\n".join(
            f"{_SHORT.get(a['rule'], a['rule'])} {a['state']} ({a['level']})" for a in o["alerts"]
        )
        table.add_row(
            Text(o["level"], style=_STYLE[o["level"]]),
            who,
            _cell_total(o),
            _cell_intensity(o),
            alerts or "-",
            "\n".join(o["to_green"]) or "-",
        )
    console.print(table)
    hidden = len(objects) - len(shown)
    if hidden:
        console.print(f"{hidden} green enterprise(s) without alerts not shown (--all lists them)")
    counts = {lv: sum(o["level"] == lv for o in objects) for lv in ("red", "yellow", "green")}
    console.print(
        f"levels: {counts['red']} red, {counts['yellow']} yellow, {counts['green']} green; "
        f"transitions recorded: {len(outcome.transitions) if outcome.applied else 0}"
    )
    for t in outcome.transitions if outcome.applied else []:
        console.print(
            Text(
                f"  {t.key[0]} {t.key[1]} {t.key[2]}: {t.previous or 'none'} → "
                f"{t.state} ({t.level})"
            ),
            highlight=False,
        )
    if objects:
        console.print(Text(f"rules: {objects[0]['rules']}", style="dim"), soft_wrap=True)


def list_cmd(
    settings: Settings,
    state: Annotated[
        str | None,
        typer.Option("--state", help="Only alerts in this state: pending, firing or resolved."),
    ] = None,
    since: Annotated[
        str,
        typer.Option(help="Also alerts resolved within this long (90s, 15m, 2h, 7d)."),
    ] = "7d",
    json_out: JsonOption = False,
) -> None:
    """Current and recent alerts, from the alert state in the runtime directory.

    Firing and pending alerts, and those resolved within `--since`, red first. What the
    MQTT retained messages show per subject is the same state.

    Example: `greenmon alerts list --state firing`

    Example: `greenmon alerts list --since 30d --json`
    """
    from greenmon.aggregator.cli import parse_duration
    from greenmon.rules.alerts.service import list_alerts, open_store

    if state is not None and state not in ("pending", "firing", "resolved"):
        raise ConfigError("--state: use pending, firing or resolved")
    window = parse_duration(since, "--since")
    with open_store(settings) as store:
        rows = list_alerts(
            store, settings.timezone, state=state, since=time.time() - window.total_seconds()
        )
        backlog = store.backlog()
    if json_out:
        print_json(rows)
        return
    # one line per alert and its message indented below: readable at any terminal width
    console.print(f"{len(rows)} alert(s), firing first, then pending, then recently resolved")
    for a in rows:
        who = a["subject"] if a["scope"] == "enterprise" else f"{a['subject']} ({a['scope']})"
        head = Text.assemble(
            (f"{a['state']:8} {a['level']:6}", _STYLE.get(a["level"], "")),
            f"  {who}  {_SHORT.get(a['rule'], a['rule'])}  "
            f"{_fmt(a['value'])} / {_fmt(a['threshold'])}  since {a['since'][:16]}",
        )
        console.print(head, highlight=False)
        console.print(Text("    " + a["message"], style="dim"), highlight=False)
    for sink, info in backlog.items():
        console.print(
            Text(
                f"{sink}: {info['pending']} message(s) waiting to be delivered "
                f"(last failure: {info['last_error']})"
            ),
            highlight=False,
        )


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.4g}"


def watch_cmd(
    settings: Settings,
    interval: Annotated[
        float | None,
        typer.Option(
            min=1.0, help="Seconds between evaluations.", show_default="alerts.interval_s (300)"
        ),
    ] = None,
    rules: RulesOption = None,
    aggregate: Annotated[
        bool,
        typer.Option(
            "--aggregate",
            help="Also run `aggregate --follow` in this process and evaluate after each of "
            "its rounds that wrote new windows.",
        ),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Evaluate every interval until stopped (Ctrl-C or SIGTERM).

    Each evaluation judges as of now and records transitions; the sinks deliver on their own
    threads, retrying with backoff, so a webhook that is down never holds evaluation up.
    `--aggregate` runs the aggregator's follow mode in the same process and evaluates after
    each round that wrote something, as well as every interval. The registry is reloaded when
    its files change or on SIGHUP (a bad edit is refused and logged; the registry in use
    stays). With `--json`, one JSON line per evaluation. After every evaluation it writes the
    heartbeat `<runtime-dir>/health/alerts.json` that `python -m greenmon.health heartbeat`
    judges (container health checks, monitoring).

    Example: `greenmon alerts watch --registry fleet/ --interval 60`
    """
    from greenmon.health import Heartbeat, heartbeat_path
    from greenmon.influx import InfluxClient
    from greenmon.registry_watch import RegistryWatcher
    from greenmon.rules.alerts.rulefile import load_alert_rules
    from greenmon.rules.alerts.service import make_sinks, open_store, watch

    settings = _prepare(settings)
    assert settings.registry is not None
    loaded = load_alert_rules(rules or settings.alerts.rules)
    watcher = RegistryWatcher(settings.registry)  # a bad registry fails here, at start-up
    sinks, notes = make_sinks(settings)
    logging.getLogger("greenmon").setLevel(logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    watcher.install_sighup()
    every = interval or settings.alerts.interval_s
    rounds = _follower(settings, watcher) if aggregate else None
    for note in notes:
        err_console.print(Text(note), highlight=False)
    if not json_out:
        console.print(
            f"watching: every {every:g} s, sinks: "
            + (", ".join(s.describe() for s in sinks) or "none")
            + f"; rules {loaded.info.label}; Ctrl-C to stop"
        )

    def show(outcome: Outcome) -> None:
        counts = {
            lv: sum(o["level"] == lv for o in outcome.objects) for lv in ("red", "yellow", "green")
        }
        moves = [
            {
                "scope": t.key[0],
                "subject": t.key[1],
                "rule": t.key[2],
                "state": t.state,
                "previous": t.previous,
                "level": t.level,
                "message": t.message,
            }
            for t in outcome.transitions
        ]
        if json_out:
            line = {
                "as_of": outcome.judgement.as_of.isoformat(),
                "levels": counts,
                "transitions": moves,
            }
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        console.log(
            f"{counts['red']} red, {counts['yellow']} yellow, {counts['green']} green; "
            f"{len(moves)} transition(s)"
        )
        for m in moves:
            console.log(
                Text(
                    f"  {m['scope']} {m['subject']} {m['rule']}: "
                    f"{m['previous'] or 'none'} → {m['state']} ({m['level']})"
                )
            )

    # After every evaluation, the heartbeat health checks read (greenmon.health).
    heartbeat = Heartbeat(heartbeat_path(settings.runtime_dir, "alerts"))

    def evaluated(outcome: Outcome) -> None:
        heartbeat.beat(True, f"{len(outcome.transitions)} transition(s)")
        show(outcome)

    watcher.start()
    try:
        with open_store(settings) as store:
            n = watch(
                lambda: InfluxClient.from_settings(settings),
                lambda: watcher.current,
                loaded,
                store,
                settings,
                stop,
                interval_s=every,
                sinks=sinks,
                on_outcome=evaluated,
                rounds=rounds,
            )
    finally:
        watcher.close()
    if not json_out:
        console.print(f"stopped after {n} evaluation(s)")


def _follower(settings: Settings, watcher: Any) -> Any:
    """A `greenmon aggregate --follow` round as a callable: True when it wrote something."""
    from greenmon.aggregator.follow import Follower
    from greenmon.aggregator.service import default_options
    from greenmon.influx import InfluxClient
    from greenmon.retention import ensure_quietly

    client = InfluxClient.from_settings(settings)
    ensure_quietly(client, settings)  # the database and its retention policies exist
    opts = default_options(
        tz=settings.timezone,
        chunk_readings=settings.aggregate.chunk_readings,
        meter_windows=settings.aggregate.meter_windows,
    )
    follower = Follower(client, watcher.current, opts, registry_source=lambda: watcher.current)

    def round_() -> bool:
        return any(n for n in follower.poll().written.values())

    return round_


def register(app: typer.Typer) -> None:
    alerts_app.command("check")(service_options(check_cmd))
    alerts_app.command("watch")(service_options(watch_cmd))
    alerts_app.command("list")(service_options(list_cmd))
    app.add_typer(alerts_app, name="alerts")
