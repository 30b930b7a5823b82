"""A simulation run, start to finish: parse the run's options, plan it, summarise it.

This module owns the glue between the pure stages: `plan_run` draws the world
(`greenmon.simulators.world`), places the faults (`greenmon.simulators.faults`) and builds the
messages (`greenmon.simulators.messages`); the command line then writes the truth, writes an
out-file or publishes (`greenmon.simulators.gateways`), and prints `summarize`'s figures. It
also parses the user's spellings of times, intervals and speeds (`parse_start`,
`parse_interval`, `parse_speed`), raising `SimulatorError` with a readable message.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from greenmon.simulators.errors import SimulatorError
from greenmon.simulators.faults import FaultSpec, apply_world_faults
from greenmon.simulators.fleet import Fleet
from greenmon.simulators.gateways import PublishResult
from greenmon.simulators.messages import Plan, build_messages
from greenmon.simulators.world import Grid, make_grid, simulate_world

__all__ = [
    "DEFAULT_START",
    "Planned",
    "RunSpec",
    "parse_interval",
    "parse_speed",
    "parse_start",
    "plan_run",
    "summarize",
]

CST: Final = timezone(timedelta(hours=8))
DEFAULT_START: Final = "2025-06-02T00:00:00+08:00"  # a Monday
_INTERVAL: Final = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h)?\s*$")
_UNIT_S: Final = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_interval(text: str) -> int:
    """``15m``, ``1h``, ``900s`` or ``900`` -> seconds (a whole number > 0 dividing a day)."""
    match = _INTERVAL.match(text)
    if not match:
        raise SimulatorError(f"interval {text!r}: expected e.g. 15m, 1h, 900s")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0 or 86_400 % seconds:
        raise SimulatorError(f"interval {text!r}: must be > 0 and divide a day evenly")
    return seconds


def parse_start(text: str, step_s: int, *, now: datetime | None = None) -> int:
    """``now`` (rounded down to the interval), an RFC 3339 time, or a local (China) date or
    time without offset -> epoch ms."""
    if text.strip().lower() == "now":
        current = now or datetime.now(UTC)
        ms = int(current.timestamp() * 1000)
        return ms - ms % (step_s * 1000)
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SimulatorError(
            f"start {text!r}: expected 'now', an ISO 8601 time such as "
            "2025-06-02T00:00:00+08:00, or a date such as 2025-06-02 (China time)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CST)
    return int(dt.timestamp() * 1000)


def parse_speed(text: str) -> float | None:
    """``max`` (or 0): as fast as possible -> None; otherwise simulated seconds per second."""
    if text.strip().lower() in ("max", "0", "inf", "fast"):
        return None
    try:
        speed = float(text)
    except ValueError:
        raise SimulatorError(f"speed {text!r}: expected a number (e.g. 43200) or 'max'") from None
    if not math.isfinite(speed) or speed <= 0:
        raise SimulatorError(f"speed {text!r}: must be > 0, or 'max'")
    return speed


@dataclass(frozen=True)
class RunSpec:
    """What to simulate: window, resolution, seed, faults, topic prefix."""

    start_ms: int
    days: float
    step_s: int
    seed: int
    faults: FaultSpec = field(default_factory=FaultSpec)
    prefix: str = "greenmon/v1"


@dataclass(frozen=True)
class Planned:
    grid: Grid
    plan: Plan
    seconds: float


def plan_run(fleet: Fleet, spec: RunSpec) -> Planned:
    """World, faults and messages of a run (pure: same fleet and spec, same plan)."""
    started = time.perf_counter()
    grid = make_grid(fleet, spec.start_ms, spec.days, spec.step_s)
    world = simulate_world(fleet, grid, spec.seed)
    faulted = apply_world_faults(fleet, world, spec.faults, spec.seed)
    plan = build_messages(fleet, faulted, grid, spec.faults, spec.seed, prefix=spec.prefix)
    return Planned(grid=grid, plan=plan, seconds=time.perf_counter() - started)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, CST).isoformat()


def summarize(
    fleet: Fleet,
    spec: RunSpec,
    planned: Planned,
    *,
    published: PublishResult | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's figures, ready for a table or ``--json``."""
    plan = planned.plan
    readings_sent = int(plan.readings["publishes"].sum())
    gen = planned.seconds or 1e-9
    out: dict[str, Any] = {
        "enterprises": fleet.enterprises.height,
        "meters": fleet.meters.height,
        "gateways": fleet.gateways.height,
        "start": _iso(spec.start_ms),
        "end": _iso(planned.grid.end_ms),
        "days": spec.days,
        "interval_s": spec.step_s,
        "seed": spec.seed,
        "faults_spec": str(spec.faults),
        "messages": plan.messages.height,
        "live_messages": plan.live_messages,
        "readings": readings_sent,
        "truth_rows": plan.readings.height,
        "faults": {k: v for k, v in plan.counts.items() if v},
        "generation_s": round(planned.seconds, 3),
        "generation_messages_per_s": round(plan.messages.height / gen),
        "generation_readings_per_s": round(readings_sent / gen),
    }
    if published is not None:
        out.update(
            published=published.published,
            seconds=round(published.seconds, 3),
            rate=round(published.rate, 1),
            connects=published.connects,
            reconnects=published.reconnects,
            connect_retries=published.retries,
        )
        if published.max_late_s:
            out["max_late_s"] = round(published.max_late_s, 3)
    out.update(extra or {})
    return out
