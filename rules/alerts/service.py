"""One evaluation end to end, and the watch loop.

`evaluate_once` reads the inputs (`inputs`), judges (`evaluate`), steps every alert through the
lifecycle (`lifecycle`), and — unless it is a dry run or the moment is not later than the last
one applied — records the new states, the transitions and the sinks' outbox rows in one
transaction (`store`). Delivery is separate (`delivery`): nothing here waits for a sink.

What each sink gets per evaluation:

- ``influx``: one ``alert`` point per transition (DESIGN.md §3), stamped with the evaluation
  moment;
- ``mqtt``: the subject's current state (level, figures, its pending and firing alerts),
  retained on ``{prefix}/alerts/{scope}/{subject}``, whenever its level or alerts changed;
- each webhook: every transition people should hear of (firing, a firing level changing,
  resolving after firing).

`subject_objects` is the ``--json`` form: one object per enterprise, county and the city.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import polars as pl

from greenmon.config import Settings
from greenmon.influx import InfluxClient
from greenmon.lineprotocol import format_line
from greenmon.registry import Registry
from greenmon.retention import raw_complete_since
from greenmon.rules.alerts.delivery import Dispatcher
from greenmon.rules.alerts.errors import SinkError
from greenmon.rules.alerts.evaluate import LEVELS, Judgement, evaluate, horizon_of
from greenmon.rules.alerts.inputs import (
    fill_months,
    read_daily,
    read_last_seen,
    read_meter_days,
    read_months,
)
from greenmon.rules.alerts.lifecycle import AlertState, Condition, Key, Transition, step
from greenmon.rules.alerts.rulefile import RULES, AlertRules
from greenmon.rules.alerts.sinks import InfluxSink, MqttSink, Sink, WebhookSink
from greenmon.rules.alerts.store import AlertStore, OutboxEntry, default_path
from greenmon.rules.ruleset import LoadedRules

__all__ = [
    "Inputs",
    "Outcome",
    "evaluate_once",
    "judge",
    "make_sinks",
    "open_store",
    "read_inputs",
    "record",
    "subject_objects",
    "topic_for",
    "watch",
]

log = logging.getLogger("greenmon.rules.alerts")
_SCOPE_ORDER: Final = {"city": 0, "county": 1, "enterprise": 2}
_LIVE: Final = ("pending", "firing")


@dataclass
class Outcome:
    """One evaluation: the judgement, the alerts after it and what was recorded."""

    judgement: Judgement
    states: dict[Key, AlertState]
    transitions: list[Transition]
    applied: bool
    objects: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    outbox: int = 0


def open_store(settings: Settings) -> AlertStore:
    path = settings.alerts.state_file or default_path(settings.runtime_dir, settings.database)
    return AlertStore(path)


def topic_for(prefix: str, scope: str, subject: str) -> str:
    """``{prefix}/alerts/{scope}/{subject}``; MQTT wildcards and separators in a subject
    become ``_``."""
    safe = subject.replace("/", "_").replace("+", "_").replace("#", "_")
    return f"{prefix.rstrip('/')}/alerts/{scope}/{safe}"


def make_sinks(settings: Settings) -> tuple[list[Sink], list[str]]:
    """The sinks the settings ask for, and a note for each that is off."""
    sinks: list[Sink] = []
    notes: list[str] = []
    a = settings.alerts
    if a.influx:
        sinks.append(InfluxSink(settings))
    if a.mqtt:
        if settings.mqtt_url is None:
            notes.append("MQTT sink off: no broker (give --mqtt-url or start local services)")
        else:
            try:
                sinks.append(MqttSink(settings))
            except SinkError as exc:
                notes.append(f"MQTT sink off: {exc}")
    for i, hook in enumerate(a.webhooks, start=1):
        sinks.append(WebhookSink(hook, hook.name or f"{hook.format}{i}"))
    return sinks, notes


# --------------------------------------------------------------------------- one evaluation


def _conditions(judgement: Judgement) -> dict[Key, Condition]:
    out: dict[Key, Condition] = {}
    for r in judgement.conditions.iter_rows(named=True):
        out[(r["scope"], r["subject"], r["rule"])] = Condition(
            active=bool(r["active"]),
            clear=bool(r["clear"]),
            level=r["level"],
            value=_finite(r["value"]),
            threshold=_finite(r["threshold"]),
            message=r["message"] or "",
        )
    return out


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _iso(seconds: float, tz: str) -> str:
    return datetime.fromtimestamp(seconds, UTC).astimezone(ZoneInfo(tz)).isoformat()


@dataclass(frozen=True)
class Inputs:
    """What one evaluation reads from InfluxDB."""

    daily: pl.DataFrame
    months: pl.DataFrame
    meter_days: pl.DataFrame | None
    last_seen: pl.DataFrame | None
    notes: tuple[str, ...] = ()


def read_inputs(
    client: InfluxClient,
    rules: AlertRules,
    as_of: datetime,
    tz: str,
    *,
    raw_since: datetime | None = None,
) -> Inputs:
    """The monthly totals of complete months, the daily totals of the recent days (this month,
    the sudden-change baseline), the judged day's meter completeness, the newest reading per
    meter. `raw_since`: from when on the raw readings are all still kept (None: forever);
    before it, silence cannot be told from expiry, so the gateway-silence rule is not judged.
    """
    today = as_of.astimezone(ZoneInfo(tz)).date()
    since = min(
        date(today.year, today.month, 1),
        today - timedelta(days=rules.sudden_change.baseline_days + 1),
    )
    daily = read_daily(client, since, today, tz)
    months = fill_months(client, read_months(client, as_of, tz), daily, as_of, tz)
    judged = horizon_of(daily, today) - timedelta(days=1) if daily.height else None
    meter_days = (
        read_meter_days(client, judged, tz)
        if judged is not None and rules.data_completeness.enabled
        else None
    )
    notes: tuple[str, ...] = ()
    last_seen = None
    if rules.gateway_silent.enabled:
        lookback_from = as_of - timedelta(seconds=rules.gateway_silent.lookback)
        if raw_since is not None and lookback_from < raw_since:
            notes = (
                "gateway_silent not judged: raw readings before "
                f"{raw_since.astimezone(ZoneInfo(tz)).isoformat(timespec='minutes')} are no "
                "longer kept (retention.raw_days), so silence cannot be told from expiry",
            )
        else:
            last_seen = read_last_seen(client, as_of, rules.gateway_silent.lookback)
    return Inputs(daily, months, meter_days, last_seen, notes)


def judge(
    inputs: Inputs, registry: Registry, rules: AlertRules, as_of: datetime, tz: str
) -> Judgement:
    """`evaluate` on what `read_inputs` read."""
    return evaluate(
        inputs.daily,
        registry,
        rules,
        as_of,
        tz=tz,
        months=inputs.months,
        meter_days=inputs.meter_days,
        last_seen=inputs.last_seen,
    )


def evaluate_once(
    client: InfluxClient,
    registry: Registry,
    rules: LoadedRules[AlertRules],
    store: AlertStore,
    settings: Settings,
    as_of: datetime,
    *,
    sinks: Sequence[Sink] = (),
    dry_run: bool = False,
) -> Outcome:
    """Judge as of `as_of` and (unless `dry_run`) record the alerts (see the module docstring)."""
    tz = settings.timezone
    raw_since = raw_complete_since(client, settings) if rules.rules.gateway_silent.enabled else None
    inputs = read_inputs(client, rules.rules, as_of, tz, raw_since=raw_since)
    judgement = judge(inputs, registry, rules.rules, as_of, tz)
    outcome = record(judgement, registry, rules, store, settings, sinks=sinks, dry_run=dry_run)
    outcome.notes[:0] = inputs.notes
    return outcome


def record(
    judgement: Judgement,
    registry: Registry,
    rules: LoadedRules[AlertRules],
    store: AlertStore,
    settings: Settings,
    *,
    sinks: Sequence[Sink] = (),
    dry_run: bool = False,
) -> Outcome:
    """Step the alerts through `judgement` and record them (the half of `evaluate_once`
    after reading; also what the benchmark times)."""
    tz = settings.timezone
    now = judgement.as_of.timestamp()
    states = store.states()
    last = store.last_evaluated()
    notes: list[str] = []
    applied = not dry_run and (last is None or now > last)
    if last is not None and now <= last:
        # the stored states belong to a later moment: show this one judged from a blank state
        states = {}
        notes.append(
            ("" if dry_run else "alert states not changed: ")
            + f"they were already evaluated up to {_iso(last, tz)} (a moment is applied once, "
            "in order); the alerts shown are this moment judged from a blank state"
        )
    conditions = _conditions(judgement)
    changed: list[AlertState] = []
    transitions: list[Transition] = []
    for key in sorted(set(conditions) | set(states)):
        if key[2] not in RULES:
            continue  # a rule this version no longer knows
        timing = rules.rules.timing(key[2])
        prev = states.get(key)
        new, transition = step(
            key, prev, conditions.get(key), now, timing.pending_for, timing.keep_firing_for
        )
        if new is not None and new != prev:
            changed.append(new)
        if transition is not None:
            transitions.append(transition)
    after = {**states, **{s.key: s for s in changed}}
    objects = subject_objects(judgement, after, transitions, rules, tz)
    outcome = Outcome(judgement, after, transitions, applied, objects, notes)
    if applied:
        entries = _outbox(objects, transitions, sinks, settings, judgement, store)
        digests = {(o["scope"], o["subject"]): _digest(o) for o in objects}
        store.apply(now, changed, transitions, entries, digests)
        outcome.outbox = len(entries)
    return outcome


def _digest(obj: dict[str, Any]) -> str:
    key = [obj["level"], [(a["rule"], a["state"], a["level"]) for a in obj["alerts"]]]
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()


def _outbox(
    objects: list[dict[str, Any]],
    transitions: list[Transition],
    sinks: Sequence[Sink],
    settings: Settings,
    judgement: Judgement,
    store: AlertStore,
) -> list[OutboxEntry]:
    names = {"influx", "mqtt"} & {s.name for s in sinks}
    hooks = [s.name for s in sinks if s.name.startswith("webhook:")]
    entries: list[OutboxEntry] = []
    at_ms = int(judgement.as_of.timestamp() * 1000)
    by_subject = {(o["scope"], o["subject"]): o for o in objects}
    if "influx" in names:
        for t in transitions:
            fields: dict[str, Any] = {"level": t.level, "state": t.state, "message": t.message}
            for k, v in (("value", t.value), ("threshold", t.threshold)):
                if v is not None and math.isfinite(v):
                    fields[k] = float(v)
            tags = {"scope": t.key[0], "subject": t.key[1], "rule": t.key[2]}
            entries.append(
                OutboxEntry("influx", {"line": format_line("alert", tags, fields, at_ms)})
            )
    if "mqtt" in names:
        old = store.digests()
        for obj in objects:
            key = (obj["scope"], obj["subject"])
            if old.get(key) == _digest(obj):
                continue
            topic = topic_for(settings.mqtt_topic_prefix, obj["scope"], obj["subject"])
            entries.append(OutboxEntry("mqtt", {"topic": topic, "payload": obj}, key=topic))
    if hooks:
        tz = settings.timezone
        for t in transitions:
            if not t.notify:
                continue
            obj = by_subject.get((t.key[0], t.key[1]), {})
            event = {
                "id": f"{t.key[0]}/{t.key[1]}/{t.key[2]}/{t.state}/{at_ms}",
                "at": _iso(t.at, tz),
                "scope": t.key[0],
                "subject": t.key[1],
                "name": obj.get("name"),
                "rule": t.key[2],
                "state": t.state,
                "previous": t.previous,
                "level": t.level,
                "value": t.value,
                "threshold": t.threshold,
                "message": t.message,
            }
            entries.extend(OutboxEntry(hook, event) for hook in hooks)
    return entries


# --------------------------------------------------------------------------- output


def _alert_dict(state: AlertState, tz: str) -> dict[str, Any]:
    return {
        "rule": state.key[2],
        "level": state.level or "green",
        "state": state.state,
        "value": state.value,
        "threshold": state.threshold,
        "message": state.message,
        "since": _iso(state.since, tz),
    }


def _num(x: Any) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    return x


def subject_objects(
    judgement: Judgement,
    states: dict[Key, AlertState],
    transitions: Iterable[Transition],
    rules: LoadedRules[AlertRules],
    tz: str,
) -> list[dict[str, Any]]:
    """The ``--json`` objects, red first (then yellow, green; city, counties, enterprises)."""
    resolved_now = {t.key for t in transitions if t.state == "resolved"}
    per_subject: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key, state in states.items():
        if state.state in _LIVE or key in resolved_now:
            per_subject.setdefault((key[0], key[1]), []).append(_alert_dict(state, tz))
    out = []
    as_of = judgement.as_of.astimezone(ZoneInfo(tz)).isoformat()
    data_through = judgement.horizon - timedelta(days=1)
    for row in judgement.subjects.iter_rows(named=True):
        scope, subject = row["scope"], row["subject"]
        alerts = sorted(
            per_subject.get((scope, subject), []),
            key=lambda a: (LEVELS.index(a["level"]), a["rule"]),
        )
        obj: dict[str, Any] = {"scope": scope, "subject": subject}
        if scope == "enterprise":
            obj.update(enterprise=subject, name=row["name"], county=row["county"])
        elif scope == "county":
            obj["county"] = subject
        else:
            obj["city"] = subject
        obj.update(
            level=row["level"],
            as_of=as_of,
            year=judgement.year,
            data_through=str(data_through) if judgement.days_elapsed else None,
            total={
                "level": row["total_level"],
                "ytd_tce": _num(row["ytd_tce"]),
                "prorata_quota_tce": _num(row["prorata_tce"]),
                "projected_tce": _num(row["projected_tce"]),
                "quota_tce": _num(row["quota_tce"]),
                "ratio": _num(row["ratio"]),
                "quota_source": row["quota_source"],
                "basis": row["basis"],
                "days_elapsed": judgement.days_elapsed,
                "days_remaining": judgement.days_in_year - judgement.days_elapsed,
                "required_tce_per_day": _num(row["required_tce_per_day"]),
                "completeness": _num(row["completeness"]),
            },
            intensity={
                "level": row["intensity_level"],
                "tce_per_10k_yuan": _num(row["intensity"]),
                "denominator": rules.rules.intensity.denominator,
                "target": _num(row["intensity_target"]),
                "target_source": row["target_source"],
                "same_period_last_year": _num(row["intensity_last_year"]),
            },
            reasons=list(row["reasons"]),
            to_green=list(row["to_green"]),
            alerts=alerts,
            rules=rules.info.label,
        )
        if scope != "enterprise":
            obj["enterprises"] = row["enterprises"]
        out.append(obj)
    out.sort(
        key=lambda o: (
            LEVELS.index(o["level"]),
            min((LEVELS.index(a["level"]) for a in o["alerts"]), default=3),
            _SCOPE_ORDER[o["scope"]],
            -(o["total"]["ratio"] or 0.0),
            o["subject"],
        )
    )
    return out


def list_alerts(
    store: AlertStore, tz: str, *, state: str | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    """Current alerts (pending, firing) and those resolved since `since`, red first."""
    rows = []
    for key, s in store.states().items():
        recent = s.state in _LIVE or (since is not None and s.since >= since)
        if recent and (state is None or s.state == state):
            rows.append(
                {
                    "scope": key[0],
                    "subject": key[1],
                    **_alert_dict(s, tz),
                    "updated": _iso(s.updated, tz),
                }
            )
    rows.sort(
        key=lambda a: (
            ("firing", "pending", "resolved").index(a["state"]),
            LEVELS.index(a["level"]),
            a["scope"],
            a["subject"],
            a["rule"],
        )
    )
    return rows


# --------------------------------------------------------------------------- watch


def watch(
    make_client: Callable[[], InfluxClient],
    registry: Callable[[], Registry],
    rules: LoadedRules[AlertRules],
    store: AlertStore,
    settings: Settings,
    stop: threading.Event,
    *,
    interval_s: float,
    sinks: Sequence[Sink],
    on_outcome: Callable[[Outcome], None] | None = None,
    rounds: Callable[[], bool] | None = None,
    poll_s: float = 5.0,
) -> int:
    """Evaluate every `interval_s` (and whenever `rounds`, polled every `poll_s`, says new
    data was written) until `stop`; sinks deliver on their own threads meanwhile. Returns the
    number of evaluations. InfluxDB being away is logged once and retried."""
    dispatcher = Dispatcher(store, sinks, max_age_s=settings.alerts.outbox_max_age_s)
    dispatcher.start()
    evaluations = 0
    down = False
    next_run = 0.0
    try:
        while not stop.is_set():
            fresh = False
            if rounds is not None:
                try:
                    fresh = rounds()
                except Exception as exc:  # the aggregator's own errors: logged, retried
                    log.warning("aggregate round failed: %s", exc)
            now_mono = time.monotonic()
            if fresh or now_mono >= next_run:
                try:
                    with make_client() as client:
                        outcome = evaluate_once(
                            client,
                            registry(),
                            rules,
                            store,
                            settings,
                            datetime.now(UTC),
                            sinks=sinks,
                        )
                    evaluations += 1
                    dispatcher.wake()
                    if down:
                        log.warning("evaluating again")
                        down = False
                    if on_outcome is not None:
                        on_outcome(outcome)
                except Exception as exc:
                    if not down:
                        log.warning(
                            "evaluation failed (%s); retrying every %.0f s",
                            exc,
                            min(interval_s, poll_s),
                        )
                        down = True
                    next_run = now_mono + min(interval_s, poll_s)
                else:
                    next_run = now_mono + interval_s
            stop.wait(min(poll_s, max(0.05, next_run - time.monotonic())))
    finally:
        dispatcher.stop()
    return evaluations
