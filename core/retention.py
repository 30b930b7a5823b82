"""How long InfluxDB keeps what: greenmon's retention layout, and applying it (1.x).

The default layout (settings section ``[retention]``):

- raw ``meter_reading`` in the retention policy ``raw`` (`raw_policy`), kept `raw_days`
  (1096 by default: three years, so a whole calendar year can still be recomputed from raw
  readings well into the next one; at least 92, see `greenmon.config.MIN_RAW_DAYS`);
- everything else (the aggregator's ``meter_energy``, ``energy``, ``intensity``, the rules'
  ``alert``, ``screening``, ``efficiency_class``, self-monitoring) in the database's default
  policy (``autogen``), kept forever unless `results_days` says otherwise. The aggregator's
  daily and monthly points are the downsampled record that outlives the raw readings.

`policies_of` is the measurement -> policy map an `InfluxClient` made from the settings
carries (its `source()` qualifies a measurement in InfluxQL, its writes take ``rp``).
`ensure_retention` creates the database and the policies, and with ``alter`` also changes
their durations to the settings; it never shortens one unless told to (readings older than a
shortened duration are deleted by InfluxDB at its next retention check). InfluxDB 2.x and
3.x have no retention-policy statements: there the layout is buckets (2.x) or databases
(3.x) named ``greenmon`` and ``greenmon/raw``, created by their own tools (see
``docs/operations.md``); `ensure_retention` then reports ``supported=False``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from greenmon.config import Settings
from greenmon.influx import InfluxClient, InfluxError, InfluxQueryError, quote_ident

log = logging.getLogger("greenmon.retention")

READINGS = "meter_reading"
_DAY_S = 86_400


def policies_of(settings: Settings) -> dict[str, str]:
    """Measurement -> retention policy, for the measurements not in the default policy."""
    rp = settings.retention.raw_policy
    return {READINGS: rp} if rp else {}


def source_of(settings: Settings, measurement: str) -> str:
    """`measurement` for an InfluxQL FROM clause, qualified by its retention policy (what an
    `InfluxClient` made from `settings` gives; for queries greenmon hands to others)."""
    rp = policies_of(settings).get(measurement)
    return f"{quote_ident(rp)}.{quote_ident(measurement)}" if rp else quote_ident(measurement)


def raw_max_age_s(settings: Settings) -> float | None:
    """How old a raw reading may be and still be stored (None: any age). An hour short of
    the policy's duration: InfluxDB counts from its own clock, at its own moment."""
    ret = settings.retention
    days = ret.raw_days if ret.raw_policy else ret.results_days
    return days * _DAY_S - 3600 if days else None


def parse_duration(text: str) -> int:
    """InfluxDB's ``26304h0m0s`` (``0s`` = forever) -> seconds (0 = forever)."""
    total = 0
    for value, unit in re.findall(r"(\d+)([wdhms])", text):
        total += int(value) * {"w": 604_800, "d": 86_400, "h": 3600, "m": 60, "s": 1}[unit]
    return total


def _influx_duration(days: int) -> str:
    return f"{days}d" if days else "INF"


def _human(seconds: int) -> str:
    if seconds == 0:
        return "forever"
    return f"{seconds // _DAY_S} days" if seconds % _DAY_S == 0 else f"{seconds} s"


@dataclass(frozen=True)
class Policy:
    name: str
    duration_s: int  # 0 = forever
    default: bool

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "duration": _human(self.duration_s), "default": self.default}


@dataclass
class RetentionReport:
    database: str
    supported: bool = True
    actions: list[str] = field(default_factory=list)  # what was (or would be) changed
    pending: list[str] = field(default_factory=list)  # differences left alone, and why
    policies: list[Policy] = field(default_factory=list)  # as InfluxDB has them now
    holds: dict[str, str] = field(default_factory=dict)  # measurement -> policy

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "supported": self.supported,
            "actions": self.actions,
            "pending": self.pending,
            "policies": [p.as_dict() for p in self.policies],
            "holds": self.holds,
        }


def show_policies(client: InfluxClient) -> list[Policy]:
    rows = client.query_json(f"SHOW RETENTION POLICIES ON {quote_ident(client.database)}")
    out: list[Policy] = []
    for result in rows:
        for series in result.get("series", []):
            cols = series.get("columns", [])
            for values in series.get("values", []):
                d = dict(zip(cols, values, strict=False))
                out.append(Policy(str(d["name"]), parse_duration(str(d["duration"])),
                                  bool(d.get("default"))))  # fmt: skip
    return out


def ensure_retention(
    client: InfluxClient, settings: Settings, *, alter: bool, allow_shorten: bool = False
) -> RetentionReport:
    """Create the database and its retention policies as `settings` say; with `alter`,
    also bring existing durations to the settings (shortening only with `allow_shorten`)."""
    ret = settings.retention
    db = quote_ident(client.database)
    report = RetentionReport(client.database, holds={**policies_of(settings)})
    try:
        if not client.ensure_database():
            report.supported = False
            return report
        existing = {p.name: p for p in show_policies(client)}
    except InfluxQueryError as exc:
        log.info("no retention-policy statements on this InfluxDB (%s)", exc)
        report.supported = False
        return report
    wanted: list[tuple[str, int]] = []
    if ret.raw_policy:
        wanted.append((ret.raw_policy, ret.raw_days * _DAY_S))
    default = next((p for p in existing.values() if p.default), None)
    if default is not None and default.name != ret.raw_policy:
        wanted.append((default.name, ret.results_days * _DAY_S))
    for name, seconds in wanted:
        have = existing.get(name)
        duration = _influx_duration(seconds // _DAY_S)
        if have is None:
            client.query_json(
                f"CREATE RETENTION POLICY {quote_ident(name)} ON {db} DURATION {duration} "
                "REPLICATION 1"
            )
            report.actions.append(f"created policy {name} ({_human(seconds)})")
            continue
        if have.duration_s == seconds:
            continue
        shorter = seconds != 0 and (have.duration_s == 0 or seconds < have.duration_s)
        change = f"policy {name}: {_human(have.duration_s)} -> {_human(seconds)}"
        if not alter:
            report.pending.append(f"{change} (apply with `greenmon db init`)")
        elif shorter and not allow_shorten:
            report.pending.append(
                f"{change} refused: points older than {_human(seconds)} would be deleted "
                "(`greenmon db init --allow-shorten` to do it)"
            )
        else:
            client.query_json(
                f"ALTER RETENTION POLICY {quote_ident(name)} ON {db} DURATION {duration}"
            )
            report.actions.append(change)
    report.policies = show_policies(client)
    return report


def complete_since(
    report: RetentionReport | None, settings: Settings, now: datetime | None = None
) -> datetime | None:
    """From when on the raw readings are all still there, with a day's margin (the reading
    before a range's start is read too); None: kept forever. The policy's duration as
    InfluxDB has it, else as the settings say. Recomputing from an earlier moment would
    overwrite results with sums of what is left."""
    ret = settings.retention
    seconds = (ret.raw_days if ret.raw_policy else ret.results_days) * _DAY_S
    name = ret.raw_policy or next(
        (p.name for p in (report.policies if report else []) if p.default), None
    )
    if report is not None and report.supported:
        seconds = next((p.duration_s for p in report.policies if p.name == name), seconds)
    if not seconds:
        return None
    return (now or datetime.now(UTC)) - timedelta(seconds=seconds) + timedelta(days=1)


def raw_complete_since(
    client: InfluxClient, settings: Settings, now: datetime | None = None
) -> datetime | None:
    """`complete_since` with the raw policy's duration as InfluxDB has it now (one
    ``SHOW RETENTION POLICIES``; the settings' when it cannot be read)."""
    report: RetentionReport | None = None
    try:
        report = RetentionReport(client.database, policies=show_policies(client))
    except InfluxError as exc:
        log.debug("retention policies of %s not read (%s)", client.database, exc)
    return complete_since(report, settings, now)


def ensure_quietly(client: InfluxClient, settings: Settings) -> RetentionReport | None:
    """At a command's start: create what is missing, change nothing, log differences. An
    InfluxDB that cannot be reached now is not an error here (the command retries later)."""
    try:
        report = ensure_retention(client, settings, alter=False)
    except InfluxError as exc:
        log.warning("could not check the retention policies of %s now (%s)", client.database, exc)
        return None
    for action in report.actions:
        log.warning("database %s: %s", client.database, action)
    for note in report.pending:
        log.warning("database %s: %s", client.database, note)
    return report


__all__ = [
    "READINGS",
    "Policy",
    "RetentionReport",
    "complete_since",
    "ensure_quietly",
    "ensure_retention",
    "parse_duration",
    "policies_of",
    "raw_complete_since",
    "raw_max_age_s",
    "show_policies",
    "source_of",
]
