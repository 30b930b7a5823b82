"""The demo's live weeks: the window they cover, and the gateway outage cut into them.

This module owns the part of the demo that streams. The live window ends at the real "now"
(on a quarter hour) and starts at local midnight `days` days before today, so that
`greenmon alerts watch`, which judges as of now, and every command run afterwards see a
stream that is current. `cut_outage` removes, from the planned MQTT traffic, every message the
outage gateway would have sent from its cut on (malformed extras are left: they test the
ingestor, not the gateway), and reports what that takes out: readings the ingestor will not
write, and the time from which the gateway's meters have told nothing (their energy after their
last reading is not known yet, so the truth comparison leaves it out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

__all__ = ["LiveWindow", "Outage", "cut_outage", "live_window", "outage_start"]

QUARTER_MS: Final = 900_000


@dataclass(frozen=True)
class LiveWindow:
    start_ms: int  # local midnight, `days` days before today
    end_ms: int  # now, rounded down to a quarter hour
    days: float  # (end - start) in days: whole quarter hours

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ms / 1000, UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.end_ms / 1000, UTC)


def live_window(now: datetime, days: int, tz: str) -> LiveWindow:
    """[local midnight `days` days before today, now on a quarter hour)."""
    local = now.astimezone(ZoneInfo(tz))
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    start = (midnight - timedelta(days=days)).astimezone(ZoneInfo(tz))
    # local midnight whatever the offset did in between (no DST in China; correct elsewhere)
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    start_ms = int(start.timestamp() * 1000)
    now_ms = int(now.timestamp() * 1000)
    end_ms = now_ms - now_ms % QUARTER_MS
    if end_ms - start_ms < 2 * 3_600_000:  # just after midnight: take yesterday too
        start_ms -= 86_400_000
    return LiveWindow(start_ms, end_ms, (end_ms - start_ms) / 86_400_000)


def outage_start(window: LiveWindow, tz: str) -> int:
    """Noon (local) of the day before the window's last day, in epoch ms: the day before the
    end is about half complete, and the gateway is silent as of the end."""
    end_local = window.end.astimezone(ZoneInfo(tz))
    noon = end_local.replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    return max(window.start_ms, int(noon.timestamp() * 1000))


@dataclass(frozen=True)
class Outage:
    gateway: str
    enterprise: str
    from_ms: int
    messages_removed: int
    readings_removed: int
    #: meter id -> end (epoch ms) of its last reading that still reaches the ingestor
    last_reading_ms: dict[str, int]


def _readings_in(payload: str) -> int:
    try:
        doc = json.loads(payload)
    except ValueError:
        return 0
    if isinstance(doc, dict) and isinstance(doc.get("readings"), list):
        return len(doc["readings"])
    return 1


def cut_outage(
    messages: pl.DataFrame,
    truth: pl.DataFrame,
    gateway: str,
    enterprise: str,
    from_ms: int,
) -> tuple[pl.DataFrame, Outage]:
    """`messages` without what `gateway` publishes from `from_ms` on (simulated time); the
    outage's figures. `truth`: the run's truth table (`greenmon.simulators.truth`)."""
    gone = (
        (pl.col("client") == gateway)
        & (pl.col("at_ms") >= from_ms)
        & (pl.col("kind") != "malformed")
    )
    removed = messages.filter(gone)
    kept = messages.filter(~gone)
    dropped = set(removed["seq"].to_list())
    readings = sum(_readings_in(p) for p in removed["payload"].to_list())
    last = (
        truth.filter(
            (pl.col("gateway_id") == gateway) & pl.col("sent") & ~pl.col("seq").is_in(list(dropped))
        )
        .group_by("meter_id")
        .agg(pl.col("end").max().dt.epoch("ms").alias("last"))
    )
    # a meter of the gateway with nothing received at all has reported nothing (0)
    meters = truth.filter(pl.col("gateway_id") == gateway)["meter_id"].unique().to_list()
    last_ms = {m: 0 for m in meters} | dict(last.iter_rows())
    return kept, Outage(
        gateway=gateway,
        enterprise=enterprise,
        from_ms=from_ms,
        messages_removed=removed.height,
        readings_removed=readings,
        last_reading_ms=last_ms,
    )
