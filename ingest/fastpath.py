"""The plain case, straight from payload bytes to InfluxDB line protocol.

Almost every message a gateway sends is plain: every reading names a meter of the topic's
enterprise, carries a finite number in the registered unit (or none) and a usable timestamp.
For those, `plain_lines` goes from bytes to the ``meter_reading`` lines in one pass, without
building a `Reading` per value: on gateway-style messages it costs about half of
`codec.decode` followed by formatting, and the ingestor's CPU per reading is what limits it.

It is pure, and it is exact or it declines: it returns None as soon as anything is not plain
(bad JSON, an unknown meter, a unit to convert, a bad or future timestamp, ...), and the
caller then decodes the message with `codec.decode`, which names every reason. When it does
return lines they are, line for line, those of the readings `codec.decode` accepts, and
`codec.decode` would have rejected nothing; tests hold the two to that over the codec's table
and generated messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import orjson

from greenmon.ingest.codec import (
    DecodeLimits,
    parse_topic,
    parse_ts_ms,
)
from greenmon.lineprotocol import escape_measurement, escape_tag
from greenmon.registry import MeterInfo

MEASUREMENT = "meter_reading"

# Earliest usable epoch ms (2000-01-01), as `codec.parse_ts_ms` rules.
_MIN_TS_MS = 946_684_800_000
# Integers a float holds exactly: beyond them `float(v)` rounds (or overflows), so the
# fast path leaves them to the codec.
_MAX_EXACT_INT = 2**53


def series_prefix(enterprise: str, meter: str, carrier: str) -> str:
    """``meter_reading,<tags> value=``: everything of a line before the value."""
    return (
        f"{escape_measurement(MEASUREMENT)},carrier={escape_tag(carrier)},"
        f"enterprise={escape_tag(enterprise)},meter={escape_tag(meter)} value="
    )


class SeriesTable:
    """For each enterprise, its meters: meter id -> (line prefix, registered unit).

    Keyed by enterprise first, so "the topic's enterprise owns the meter" is the lookup itself.
    """

    def __init__(self, meters: Iterable[MeterInfo]) -> None:
        by_enterprise: dict[str, dict[str, tuple[str, str]]] = {}
        for m in meters:
            by_enterprise.setdefault(m.enterprise_id, {})[m.meter_id] = (
                series_prefix(m.enterprise_id, m.meter_id, m.carrier),
                m.unit,
            )
        self._by_enterprise = by_enterprise

    def meters_of(self, enterprise: str) -> dict[str, tuple[str, str]] | None:
        return self._by_enterprise.get(enterprise)

    def prefix(self, enterprise: str, meter: str) -> str:
        """The line prefix of a registered meter of `enterprise` (KeyError otherwise)."""
        return self._by_enterprise[enterprise][meter][0]


class PlainLines(NamedTuple):
    lines: list[str]
    max_ts_ms: int  # the latest timestamp among them (0 when there are none)


def plain_lines(
    topic: str,
    payload: bytes,
    table: SeriesTable,
    now_ms: int,
    limits: DecodeLimits = DecodeLimits(),
) -> PlainLines | None:
    """The message's ``meter_reading`` lines (nanosecond timestamps) if it is plain, else
    None (then `codec.decode` it). Pure; never raises on bad input."""
    if len(payload) > limits.max_payload_bytes:
        return None
    where = parse_topic(topic, limits.topic_prefix)
    if where is None:
        return None
    meters = table.meters_of(where[0])
    if meters is None:
        return None
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    # The same reading of the document as `codec.decode`: `readings` wins over `meter`.
    if "readings" in doc:
        items = doc["readings"]
        if type(items) is not list:
            return None
        msg_ts_raw = doc.get("ts")
    elif "meter" in doc:
        items = [doc]
        msg_ts_raw = None
    else:
        return None
    if len(items) > limits.max_readings:
        return None

    max_ms = now_ms + int(limits.max_future_skew_s * 1000)
    hi = 0
    msg_ms = 0
    msg_suffix: str | None = None  # " <ns>" of a usable message ts, for readings without one
    if msg_ts_raw is not None:
        ms = parse_ts_ms(msg_ts_raw)
        if ms is not None and ms <= max_ms:
            msg_ms, msg_suffix = ms, f" {ms}000000"

    lines: list[str] = []
    append = lines.append
    for item in items:
        if type(item) is not dict:
            return None
        meter = item.get("meter")
        if type(meter) is not str:
            return None
        series = meters.get(meter)
        if series is None:
            return None  # unknown, or another enterprise's: the codec says which
        value = item.get("value")
        if type(value) is float:
            pass  # finite: orjson refuses NaN, Infinity and numbers beyond the double range
        elif type(value) is int and -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
            value = float(value)
        else:
            return None
        unit = item.get("unit")
        if unit is not None and unit != series[1]:
            return None
        if "ts" in item:
            raw = item["ts"]
            ms = raw if type(raw) is int and raw >= _MIN_TS_MS else parse_ts_ms(raw)
            if ms is None or ms > max_ms:
                return None
            if ms > hi:
                hi = ms
            append(f"{series[0]}{value!r} {ms}000000")
        elif msg_suffix is None:
            return None
        else:
            if msg_ms > hi:
                hi = msg_ms
            append(f"{series[0]}{value!r}{msg_suffix}")
    return PlainLines(lines, hi)


__all__ = ["MEASUREMENT", "PlainLines", "SeriesTable", "plain_lines", "series_prefix"]
