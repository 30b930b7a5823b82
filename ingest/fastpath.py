"""The plain case, from payload bytes to line-protocol bytes with little per-value Python.

Almost every message a gateway sends is plain: every reading names a meter of the topic's
enterprise, carries a number in the registered unit (or none) and a usable timestamp. For
those, `plain_readings` goes from bytes to three columns in one pass: msgspec parses and
type-checks the message into structs in C (a meter that is a string, a value that is a number
and not a boolean, ...), so the Python loop only looks meters up and checks units and
timestamps; and `format_lines` turns the columns into the ``meter_reading`` lines with one
``orjson.dumps`` for all the values and joins for all the lines (``repr`` of a float costs
more than the rest of a reading's decoding). The ingestor's CPU per reading is what limits it.

`plain_readings` is pure, and it is exact or it declines: it returns None as soon as anything
is not plain (bad JSON, any field of an unexpected type, an unknown meter, a unit to convert,
a bad or future timestamp, ...), and the caller then decodes the message with `codec.decode`,
which names every reason. When it does return readings they are exactly those `codec.decode`
accepts, and `codec.decode` would have rejected nothing; tests hold the two to that over the
codec's table, generated messages and byte-mutated payloads.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any, NamedTuple

import msgspec
import orjson

from greenmon.ingest.codec import DecodeLimits, Reading, parse_topic, parse_ts_ms
from greenmon.lineprotocol import escape_measurement, escape_tag
from greenmon.registry import MeterInfo

MEASUREMENT = "meter_reading"

_UNSET: Any = msgspec.UNSET


# gc=False: decoded JSON cannot hold reference cycles, so these need no cycle collection
# (and are cheaper to make).
class _Reading(msgspec.Struct, gc=False):
    """One reading of the batch form, as the fast path accepts it (anything else: decline)."""

    meter: str
    value: float  # msgspec: a JSON number (an integer becomes its nearest float), not a bool
    unit: str | None = None
    ts: Any = _UNSET  # absent (use the message's) is not null (unusable)


class _Message(msgspec.Struct, gc=False):
    """Both forms: the batch form's fields and the single form's. Unknown fields are ignored,
    as the codec ignores them; a known field of an unexpected type makes the decoder raise,
    and the fast path declines."""

    readings: list[_Reading] | msgspec.UnsetType = msgspec.UNSET
    ts: Any = _UNSET
    meter: str | msgspec.UnsetType = msgspec.UNSET
    value: float | msgspec.UnsetType = msgspec.UNSET
    unit: str | None = None


_DECODER = msgspec.json.Decoder(_Message)


def series_prefix(enterprise: str, meter: str, carrier: str) -> bytes:
    """``meter_reading,<tags> value=``: everything of a line before the value."""
    return (
        f"{escape_measurement(MEASUREMENT)},carrier={escape_tag(carrier)},"
        f"enterprise={escape_tag(enterprise)},meter={escape_tag(meter)} value="
    ).encode()


def ts_suffix(ts_ms: int) -> bytes:
    """`` <ns>\\n``: everything of a line after the value (timestamps are after 2000)."""
    return b" %d000000\n" % ts_ms


class SeriesTable:
    """For each enterprise, its meters: meter id -> (line prefix, registered unit).

    Keyed by enterprise first, so "the topic's enterprise owns the meter" is the lookup.
    """

    def __init__(self, meters: Iterable[MeterInfo]) -> None:
        by_enterprise: dict[str, dict[str, tuple[bytes, str]]] = {}
        for m in meters:
            by_enterprise.setdefault(m.enterprise_id, {})[m.meter_id] = (
                series_prefix(m.enterprise_id, m.meter_id, m.carrier),
                m.unit,
            )
        self._by_enterprise = by_enterprise

    def meters_of(self, enterprise: str) -> dict[str, tuple[bytes, str]] | None:
        return self._by_enterprise.get(enterprise)

    def prefix(self, enterprise: str, meter: str) -> bytes:
        """The line prefix of a registered meter of `enterprise` (KeyError otherwise)."""
        return self._by_enterprise[enterprise][meter][0]

    def columns(self, readings: list[Reading]) -> PlainReadings:
        """`codec.decode`'s readings as the columns `plain_readings` returns."""
        stamps = [r.ts_ns // 1_000_000 for r in readings]
        return PlainReadings(
            [self.prefix(r.enterprise, r.meter) for r in readings],
            [r.value for r in readings],
            [ts_suffix(ms) for ms in stamps],
            max(stamps, default=0),
        )


class PlainReadings(NamedTuple):
    """Readings as the three parts of their lines."""

    prefixes: list[bytes]  # `series_prefix` of each reading's meter
    values: list[float]  # finite, in the registered unit
    suffixes: list[bytes]  # `ts_suffix` of each reading's timestamp
    max_ts_ms: int  # the latest timestamp among them (0 when there are none)


def format_lines(readings: PlainReadings) -> bytes:
    """The readings' ``meter_reading`` lines, each ended by a newline, as UTF-8. Each value is
    written as the shortest text that reads back as the same double (orjson's, which may differ
    from ``repr`` in notation: ``1e-7`` for ``1e-07``, ``0.000025`` for ``2.5e-05``)."""
    n = len(readings.values)
    if n == 0:
        return b""
    texts = orjson.dumps(readings.values)[1:-1].split(b",")
    suffixes = readings.suffixes
    end = suffixes[0]
    if suffixes.count(end) == n:  # one timestamp for all (a gateway's batch): the commonest case
        return end.join(map(b"".join, zip(readings.prefixes, texts, strict=True))) + end
    return b"".join(chain.from_iterable(zip(readings.prefixes, texts, suffixes, strict=True)))


def plain_readings(
    topic: str,
    payload: bytes,
    table: SeriesTable,
    now_ms: int,
    limits: DecodeLimits = DecodeLimits(),
) -> PlainReadings | None:
    """The message's readings if it is plain, else None (then `codec.decode` it). Pure; never
    raises on bad input."""
    if len(payload) > limits.max_payload_bytes:
        return None
    where = parse_topic(topic, limits.topic_prefix)
    if where is None:
        return None
    meters = table.meters_of(where[0])
    if meters is None:
        return None
    if not payload.isascii():
        # msgspec passes over invalid UTF-8 in a field it ignores; the codec refuses it.
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        doc = _DECODER.decode(payload)
    except msgspec.MsgspecError:
        return None
    # The same reading of the document as `codec.decode`: `readings` wins over `meter`.
    max_ms = now_ms + int(limits.max_future_skew_s * 1000)
    min_ms = limits.min_ts_ms(now_ms)
    items: list[_Reading]
    msg_ts_raw: Any = None
    if isinstance(doc.readings, list):
        items = doc.readings
        msg_ts_raw = None if doc.ts is _UNSET else doc.ts
    elif isinstance(doc.meter, str) and isinstance(doc.value, float):
        items = [_Reading(doc.meter, doc.value, doc.unit, doc.ts)]
    else:
        return None
    if len(items) > limits.max_readings:
        return None

    hi = 0
    msg_ms = 0
    msg_suffix: bytes | None = None  # of a usable message ts, for readings without their own
    if msg_ts_raw is not None:
        ms = parse_ts_ms(msg_ts_raw)
        if ms is not None and min_ms <= ms <= max_ms:
            msg_ms, msg_suffix = ms, ts_suffix(ms)

    prefixes: list[bytes] = []
    values: list[float] = []
    suffixes: list[bytes] = []
    add_prefix, add_value, add_suffix = prefixes.append, values.append, suffixes.append
    for item in items:
        known = meters.get(item.meter)
        if known is None:
            return None  # unknown, or another enterprise's: the codec says which
        unit = item.unit
        if unit is not None and unit != known[1]:
            return None
        raw = item.ts
        if raw is _UNSET:
            if msg_suffix is None:
                return None
            add_suffix(msg_suffix)
        else:
            ms = raw if type(raw) is int and raw >= min_ms else parse_ts_ms(raw)
            if ms is None or ms > max_ms or ms < min_ms:
                return None
            if ms > hi:
                hi = ms
            add_suffix(b" %d000000\n" % ms)  # ts_suffix, inlined
        add_prefix(known[0])
        add_value(item.value)  # finite: msgspec refuses NaN, Infinity and out-of-range numbers
    if msg_ms > hi and msg_suffix in suffixes:  # some reading took the message's ts
        hi = msg_ms
    return PlainReadings(prefixes, values, suffixes, hi)


__all__ = [
    "MEASUREMENT",
    "PlainReadings",
    "SeriesTable",
    "format_lines",
    "plain_readings",
    "series_prefix",
    "ts_suffix",
]
