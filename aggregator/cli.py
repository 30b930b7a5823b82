"""`greenmon aggregate`: readings -> meter and enterprise energy, carbon and intensity."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from greenmon.cli_common import JsonOption, console, print_json, service_options
from greenmon.config import Settings
from greenmon.errors import ConfigError

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d``."""
    text = text.strip()
    if len(text) < 2 or text[-1] not in _DURATION_UNITS or not text[:-1].isdigit():
        raise ConfigError(f"{what}: '{text}' is not a duration like 90s, 15m, 2h or 1d")
    return timedelta(seconds=int(text[:-1]) * _DURATION_UNITS[text[-1]])


def parse_moment(text: str, tz: str, what: str) -> datetime:
    """A local day ``YYYY-MM-DD`` (its midnight in `tz`) or an RFC 3339 instant with offset."""
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d")
            return day.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"{what}: '{text}' is neither a day (2025-06-01) nor an RFC 3339 instant "
            "(2025-06-01T08:00:00+08:00)"
        ) from exc
    if moment.tzinfo is None:
        raise ConfigError(f"{what}: '{text}' has no UTC offset (add +08:00 or Z)")
    return moment.astimezone(UTC)


def _windows(text: str, what: str, known: tuple[str, ...]) -> tuple[str, ...]:
    wanted = tuple(w.strip() for w in text.split(",") if w.strip())
    unknown = [w for w in wanted if w not in known]
    if unknown or not wanted:
        raise ConfigError(f"{what}: unknown {', '.join(unknown) or '(none)'}; use {known}")
    return wanted


def aggregate_cmd(
    settings: Settings,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="First local day (2025-06-01) or instant (RFC 3339) to recompute, inclusive.",
            show_default="the oldest reading",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Local day or instant where the range ends, exclusive.",
            show_default="the day after the newest reading",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep running: each round computes the quarter hours the new data completes "
            "(hours, days and months are summed from them) and recomputes days that late data "
            "changes.",
        ),
    ] = False,
    windows: Annotated[
        str, typer.Option(help="Comma-separated windows: 15m, 1h, 1d, 1mo.")
    ] = "15m,1h,1d,1mo",
    meter_windows: Annotated[
        str | None,
        typer.Option(
            help="Windows also written per meter (meter_energy), e.g. 15m,1h,1d,1mo; energy "
            "gets every window of --windows.",
            show_default="aggregate.meter_windows: 1h,1d,1mo",
        ),
    ] = None,
    chunk_readings: Annotated[
        int | None,
        typer.Option(
            min=1000,
            help="Readings held in memory at a time (groups of whole enterprises are sized to it).",
            show_default="aggregate.chunk_readings: 150000",
        ),
    ] = None,
    references: Annotated[
        Path | None,
        typer.Option(
            help="Directory with your energy_coefficients.csv / emission_factors.csv / "
            "intensity_references.csv / volume_conditions.csv: their rows override the "
            "packaged ones.",
            file_okay=False,
            exists=True,
        ),
    ] = None,
    electricity_basis: Annotated[
        str,
        typer.Option(
            help="calorific = 当量值 0.1229 kgce/kWh (GB/T 2589 default); equal_value = 等价值 "
            "(rows per year you supply)."
        ),
    ] = "calorific",
    lateness: Annotated[
        str, typer.Option(help="--follow: how long after the newest reading data may still come.")
    ] = "30m",
    poll_seconds: Annotated[
        float, typer.Option(min=0.1, help="--follow: seconds between rounds.")
    ] = 5.0,
    json_out: JsonOption = False,
) -> None:
    """Turn raw meter readings into energy (kgce), carbon (kgCO2) and intensity.

    Reads `meter_reading` from InfluxDB for groups of whole enterprises at a time (memory
    stays bounded whatever the range), converts registers to consumption (duplicates,
    rollovers, meter replacements, spikes and gaps handled), and writes `energy` (per
    enterprise, comprehensive and double-control, `carrier=total` included, every window),
    `meter_energy` (per meter, the --meter-windows) and `intensity` (tce per 10k yuan against
    the provincial reference). Each point names its reference rows by a compact
    `reference_id`; the full text is in the `reference` measurement and in this report.
    Re-running a range overwrites, never doubles.
    With --follow the registry is reloaded when its files change or on SIGHUP (a bad edit
    is refused, with every problem logged); days already written keep their figures until
    you recompute them with --from/--to. After every round it writes the heartbeat
    `<runtime-dir>/health/aggregate.json` that `python -m greenmon.health heartbeat` judges
    (container health checks, monitoring).

    Examples (a fleet/ made by simulate fleet, its readings ingested):
    `greenmon aggregate --registry fleet/ --from 2025-06-02 --to 2025-06-09 --json`;
    `greenmon aggregate --registry fleet/ --follow`.
    """
    from greenmon.aggregator.reference import ReferenceChoice, label_rows, load_references
    from greenmon.aggregator.service import default_options, local_day_start, next_day, run_range
    from greenmon.aggregator.store import reading_bounds
    from greenmon.aggregator.windows import WINDOWS
    from greenmon.config import resolve_local_services
    from greenmon.influx import InfluxClient
    from greenmon.registry import load_registry
    from greenmon.registry_watch import RegistryWatcher
    from greenmon.retention import complete_since, ensure_quietly

    wanted = _windows(windows, "--windows", WINDOWS)
    per_meter = (
        _windows(meter_windows, "--meter-windows", WINDOWS)
        if meter_windows is not None
        else settings.aggregate.meter_windows
    )
    if electricity_basis not in ("calorific", "equal_value"):
        raise ConfigError("--electricity-basis: use calorific or equal_value")
    if follow and (start or end):
        raise ConfigError("--follow runs from the data on; leave out --from/--to")
    settings = resolve_local_services(settings, need_mqtt=False, need_influx=True)
    if settings.registry is None:
        raise ConfigError("registry: no registry directory given (--registry DIR)")
    # valid_from/valid_to without an offset are in the configured zone
    load = functools.partial(load_registry, tz=settings.timezone)
    watcher = RegistryWatcher(settings.registry, loader=load) if follow else None
    registry = watcher.current if watcher else load(settings.registry)
    refs = load_references(references)
    opts = default_options(
        windows=wanted,
        tz=settings.timezone,
        references=refs,
        choice=ReferenceChoice(electricity_basis=electricity_basis),  # type: ignore[arg-type]
        chunk_readings=chunk_readings or settings.aggregate.chunk_readings,
        meter_windows=per_meter,
    )
    client = InfluxClient.from_settings(settings)
    layout = ensure_quietly(client, settings)  # the database and its retention policies exist
    try:
        if follow:
            assert watcher is not None
            _follow(
                client,
                watcher,
                opts,
                parse_duration(lateness, "--lateness"),
                poll_seconds,
                json_out,
                settings.runtime_dir,
            )
            return
        tz = settings.timezone
        lo = parse_moment(start, tz, "--from") if start else None
        hi = parse_moment(end, tz, "--to") if end else None
        if lo is not None and hi is not None and hi <= lo:
            raise ConfigError("--to must be after --from")
        # Raw readings older than their retention are gone: recomputing from before then
        # would overwrite the results with sums of what is left.
        kept = complete_since(layout, settings)
        if lo is not None and kept is not None and lo < kept:
            raise ConfigError(
                f"--from {start}: raw readings are complete only from "
                f"{next_day(kept, tz):%Y-%m-%d} on (retention policy "
                f"{settings.retention.raw_policy or 'default'}); the results before that stay "
                "as they are"
            )
        if lo is None or hi is None:  # the range the data spans, in whole local days
            bounds = reading_bounds(client)
            if bounds is None:
                raise ConfigError(
                    f"no readings in database '{settings.database}' and no --from/--to given"
                )
            lo = lo or local_day_start(bounds[0], tz)
            if kept is not None and lo < kept:
                lo = next_day(kept, tz)
            hi = hi or next_day(bounds[1], tz)
            if hi <= lo:
                raise ConfigError("--to must be after --from (and after the oldest reading)")
        with console.status("aggregating", spinner="dots") as status:
            result = run_range(client, registry, lo, hi, opts, say=lambda m: status.update(m))
    finally:
        client.close()
    totals = result.totals()
    summary: dict[str, Any] = {
        "from": lo.isoformat(),
        "to": hi.isoformat(),
        "readings": result.readings,
        "chunks": result.chunks,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "written": result.written,
        "references": list(refs.files),
        "reference_ids": dict(sorted(result.references.items())),
        "electricity_basis": electricity_basis,
        "enterprises": totals.to_dicts() if totals.height else [],
    }
    if json_out:
        print_json(summary)
        return
    table = Table(
        "enterprise", "county", "industry", "tce", "kgCO2", "double-control tce", "completeness",
        title=f"{lo:%Y-%m-%d %H:%M}Z .. {hi:%Y-%m-%d %H:%M}Z: {result.readings:,} readings",
    )  # fmt: skip
    for row in totals.iter_rows(named=True):
        table.add_row(
            row["enterprise"], row["county"], row["industry"], f"{row['tce']:,.3f}",
            f"{row['kgco2']:,.0f}", f"{row['double_control_kgce'] / 1000:,.3f}",
            f"{row['completeness']:.2f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "written: "
        + ", ".join(f"{k} {v:,} points" for k, v in result.written.items())
        + f" ({result.chunks} chunk(s)); reference files: {', '.join(refs.files)}"
    )
    if result.references:
        used = [r for text in result.references.values() for r in label_rows(text)]
        console.print(
            f"reference rows used ({len(result.references)} reference_id values on the points; "
            "--json or the `reference` measurement gives each id's full text):"
        )
        for line in dict.fromkeys(used):
            console.print(f"  {line}", highlight=False, markup=False)


def _follow(
    client: Any,
    watcher: Any,
    opts: Any,
    lateness: timedelta,
    poll_s: float,
    json_out: bool,
    runtime_dir: Path,
) -> None:
    from greenmon.aggregator.follow import Follower
    from greenmon.health import Heartbeat, heartbeat_path

    logging.getLogger("greenmon").setLevel(logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    watcher.install_sighup()
    say = None if json_out else (lambda m: console.log(m))
    follower = Follower(
        client, watcher.current, opts, lateness=lateness, say=say,
        registry_source=lambda: watcher.current,
        on_round=Heartbeat(heartbeat_path(runtime_dir, "aggregate")).beat,
    )  # fmt: skip
    if not json_out:
        console.print(
            f"following {client.database}: lateness {lateness}, every {poll_s} s; registry "
            f"{watcher.root} reloaded when it changes or on SIGHUP; heartbeat "
            f"{heartbeat_path(runtime_dir, 'aggregate')}; Ctrl-C to stop"
        )
    watcher.start()
    try:
        follower.run(stop, poll_s)
    finally:
        watcher.close()
    summary = {**follower.summary(), "registry_reloads": dict(watcher.reloads)}
    if json_out:
        print_json(summary)
    else:
        console.print(summary)


def register(app: typer.Typer) -> None:
    app.command("aggregate")(service_options(aggregate_cmd))
