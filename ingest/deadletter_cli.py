"""`greenmon ingest replay` and `greenmon ingest dead-letters`: the dead letters' commands."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from greenmon.cli_common import JsonOption, console, err_console, print_json
from greenmon.config import Settings
from greenmon.errors import ConfigError
from greenmon.ingest.codec import RejectReason

KNOWN_REASONS = (*(r.value for r in RejectReason), "influx_rejected", "replayed")

ReasonOption = Annotated[
    list[str] | None,
    typer.Option(
        "--reason",
        help="Only dead letters whose reason (now, after earlier replays) is this; repeatable. "
        f"One of: {', '.join(KNOWN_REASONS)}.",
        show_default="every reason",
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only dead letters received at or after this local day (2025-06-01) or RFC 3339 "
        "instant.",
    ),
]
ClientIdOption = Annotated[
    str | None,
    typer.Option(
        "--client-id",
        help="Only this ingestor's dead letters.",
        show_default="every ingestor under the runtime directory",
    ),
]


def parse_since(text: str | None, tz: str) -> float | None:
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=ZoneInfo(tz))
            return day.timestamp()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"--since: '{text}' is neither a day (2025-06-01) nor an RFC 3339 instant"
        ) from exc
    if moment.tzinfo is None:
        raise ConfigError(f"--since: '{text}' has no UTC offset (add +08:00 or Z)")
    return moment.timestamp()


def _reasons(values: list[str] | None) -> frozenset[str] | None:
    if not values:
        return None
    unknown = sorted(set(values) - set(KNOWN_REASONS))
    if unknown:
        raise typer.BadParameter(
            f"unknown reason {', '.join(unknown)}; use {', '.join(KNOWN_REASONS)}",
            param_hint="--reason",
        )
    return frozenset(values)


def replay_cmd(
    settings: Settings,
    reason: ReasonOption = None,
    since: SinceOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be written; write and mark nothing.")
    ] = False,
    client_id: ClientIdOption = None,
    json_out: JsonOption = False,
) -> None:
    """Decode dead letters again against today's registry and write what now passes.

    For a meter that sent readings before it was in meters.csv: register it (a running
    `greenmon ingest` picks the registry up by itself), then replay its `unknown_meter`
    letters. Each rejected reading is written at most once: a replayed letter is marked in
    a ledger beside the dead-letter file, so running the replay again writes nothing more.
    What still fails stays a dead letter, with its reason now (see
    `greenmon ingest dead-letters`). Rotated dead-letter files are replayed too. Letters are
    judged as of when they arrived (a reading from the future then still is one).

    Example: `greenmon ingest replay --registry tests/data/registry --reason unknown_meter
    --dry-run`, then `greenmon ingest replay --registry tests/data/registry --reason
    unknown_meter`.
    """
    from greenmon.config import resolve_local_services
    from greenmon.influx import InfluxClient
    from greenmon.ingest.replay import dead_letter_paths, limits_of, replay
    from greenmon.registry import load_registry
    from greenmon.retention import ensure_quietly

    reasons = _reasons(reason)
    moment = parse_since(since, settings.timezone)
    if settings.registry is None:
        raise ConfigError("registry: no registry directory given (--registry DIR)")
    registry = load_registry(settings.registry)
    files = dead_letter_paths(settings, client_id)
    client = None
    if not dry_run:
        settings = resolve_local_services(settings, need_mqtt=False, need_influx=True)
        client = InfluxClient.from_settings(settings)
        ensure_quietly(client, settings)
    seen = 0
    try:
        with err_console.status("replaying dead letters", spinner="dots") as status:

            def progress(n: int) -> None:
                nonlocal seen
                seen += n
                if seen % 1000 == 0:
                    status.update(f"replaying dead letters: {seen:,} read")

            report = replay(
                files,
                registry,
                limits_of(settings),
                _writer(client) if client is not None else None,
                reasons=reasons,
                since=moment,
                progress=progress,
            )
    finally:
        if client is not None:
            client.close()
    result = report.as_dict()
    result["database"] = None if dry_run else settings.database
    if json_out:
        print_json(result)
        return
    verb = "would write" if dry_run else "wrote"
    console.print(
        f"{verb} {report.written:,} readings from {report.letters:,} dead letters"
        + (f" into {settings.database}" if not dry_run else "")
        + f"; {report.already_replayed:,} replayed before (left alone)"
    )
    if report.by_meter:
        title = "readings it would write, by meter" if dry_run else "readings written, by meter"
        t = Table("meter", "readings", title=title)
        for meter, n in report.by_meter.most_common(20):
            t.add_row(meter, f"{n:,}")
        console.print(t)
    if report.still_failing:
        t = Table("reason now", "rejections", title="still failing (kept as dead letters)")
        for why, n in report.still_failing.most_common():
            t.add_row(why, f"{n:,}")
        console.print(t)
    for why, n in report.unreplayable.items():
        console.print(f"not replayable: {n:,} ({why})")


def _writer(client: Any) -> Any:
    """Raw readings go to their retention policy (the replay made sure it exists)."""
    from greenmon.retention import READINGS

    rp = client.policy(READINGS)
    return lambda body, lines: client.write_body(body, lines, rp=rp)


def dead_letters_cmd(
    settings: Settings,
    reason: ReasonOption = None,
    since: SinceOption = None,
    client_id: ClientIdOption = None,
    top: Annotated[int, typer.Option(min=1, help="Rows per table.")] = 20,
    json_out: JsonOption = False,
) -> None:
    """Summarise the dead letters by reason, gateway and meter, with their files.

    Shows which gateway sends what: rejected readings per gateway and reason, per meter and
    reason (with when first and last seen), as they stand now (`replayed` once a replay
    wrote them, or their reason after the latest replay), and each dead-letter file
    (rotated ones included) with its size.

    Example: `greenmon ingest dead-letters --reason unknown_meter`; for scripts:
    `greenmon ingest dead-letters --json`.
    """
    from greenmon.ingest.replay import dead_letter_paths, summarize

    reasons = _reasons(reason)
    summary = summarize(
        dead_letter_paths(settings, client_id),
        since=parse_since(since, settings.timezone),
        reasons=reasons,
    )
    if json_out:
        print_json(summary)
        return
    console.print(
        f"{summary['rejections']:,} rejected readings or messages in {summary['letters']:,} "
        f"dead letters: {summary['pending']:,} pending, {summary['replayed']:,} replayed"
    )
    if summary["by_reason"]:
        t = Table("reason", "rejections", title="by reason")
        for why, n in summary["by_reason"].items():
            t.add_row(why, f"{n:,}")
        console.print(t)
    _rows(summary["by_gateway"], ("enterprise", "gateway"), "by gateway", top)
    _rows(summary["by_meter"], ("enterprise", "meter"), "by meter", top)
    t = Table("file", "bytes", "letters", title="files")
    for f in summary["files"]:
        t.add_row(f["file"], f"{f['bytes']:,}", f"{f['letters']:,}")
    console.print(t)


def _rows(rows: list[dict[str, Any]], keys: tuple[str, ...], title: str, top: int) -> None:
    if not rows:
        return
    t = Table(*keys, "reason", "rejections", "letters", "first (UTC)", "last (UTC)", title=title)
    for r in rows[:top]:
        t.add_row(*(str(r[k]) for k in keys), r["reason"], f"{r['rejections']:,}",
                  f"{r['letters']:,}", r["first"], r["last"])  # fmt: skip
    console.print(t)
    if len(rows) > top:
        console.print(f"... {len(rows) - top} more rows (--top, or --json for all)")


__all__ = ["dead_letters_cmd", "replay_cmd"]
