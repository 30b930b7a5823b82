"""The MQTT payload contract, version 1: pure decoding (and the encoder the simulators use).

`decode` turns (topic, payload bytes, registry, now) into typed `Reading`s and typed
`Rejection`s. It does no I/O, never raises for bad input, and one bad reading never blocks
the good readings beside it in the same message. The network loop only moves bytes.

Topic: ``{prefix}/{enterprise}/{gateway}/readings``. Payload (batch form)::

    {"gateway": "gw-01", "ts": "2025-06-01T08:15:00+08:00",
     "readings": [{"meter": "E0001-EL-MAIN", "value": 123456.78, "unit": "kWh"},
                  {"meter": "E0001-NG-MAIN", "value": 8812.5, "ts": 1748736900000}]}

or a single reading ``{"meter": ..., "value": ..., "ts": ...}``. ``ts`` is RFC 3339 with an
offset, or epoch milliseconds; a reading's own ``ts`` overrides the message's. Values are
converted to the meter's registered unit (Wh/kWh/MWh, MJ/GJ, kg/t; m3 and Nm3 only to
themselves); the register multiplier is *not* applied here (that is the aggregator's job).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import orjson

from greenmon.registry import MeterInfo
from greenmon.units import UnitError, conversion_factor

# 2000-01-01T00:00:00Z in ms: anything earlier is a device with no clock, or seconds sent
# where milliseconds were meant.
MIN_TS_MS = 946_684_800_000
_NS_PER_MS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_EXCERPT = 200


class RejectReason(StrEnum):
    """Why input was refused. The values are stable: they are metric labels and log keys."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    BAD_TOPIC = "bad_topic"
    BAD_JSON = "bad_json"
    BAD_SHAPE = "bad_shape"
    TOO_MANY_READINGS = "too_many_readings"
    UNKNOWN_METER = "unknown_meter"
    WRONG_ENTERPRISE = "wrong_enterprise"
    BAD_VALUE = "bad_value"
    NON_FINITE = "non_finite"
    UNIT_MISMATCH = "unit_mismatch"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    BEYOND_RETENTION = "beyond_retention"


class Reading(NamedTuple):
    """One accepted meter reading, value in the meter's registered unit. (A named tuple, not a
    frozen dataclass: it is made once per reading on the hot path, and a frozen dataclass's
    ``__init__`` costs about a fifth of the ingestor's CPU per reading.)"""

    enterprise: str
    meter: str
    carrier: str
    value: float
    ts_ns: int


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str
    meter: str | None = None
    index: int | None = None  # position in `readings`, when one reading was refused


@dataclass(frozen=True, slots=True)
class Decoded:
    readings: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    topic_prefix: str = "greenmon/v1"
    max_payload_bytes: int = 256 * 1024
    max_readings: int = 5000
    max_future_skew_s: float = 300.0
    # Readings older than this are refused (InfluxDB would drop them: they are beyond the
    # raw readings' retention policy); None: no limit.
    max_age_s: float | None = None

    def min_ts_ms(self, now_ms: int) -> int:
        """The oldest timestamp accepted at `now_ms`."""
        if self.max_age_s is None:
            return MIN_TS_MS
        return max(MIN_TS_MS, now_ms - int(self.max_age_s * 1000))


class MeterLookup(Protocol):
    def meter(self, meter_id: str) -> MeterInfo | None: ...


def parse_topic(topic: str, prefix: str) -> tuple[str, str] | None:
    """``{prefix}/{enterprise}/{gateway}/readings`` -> (enterprise, gateway), else None."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) != 3 or parts[2] != "readings" or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def parse_ts_ms(raw: Any) -> int | None:
    """RFC 3339 with an offset, or epoch milliseconds -> epoch ms; None if unusable."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        ms = raw
    elif isinstance(raw, float):
        if not math.isfinite(raw):
            return None
        ms = int(raw)
    elif isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None  # a local time without offset is ambiguous: refuse, don't guess
        ms = (dt - _EPOCH) // _ONE_MS  # exact integer arithmetic, no float rounding
    else:
        return None
    return ms if ms >= MIN_TS_MS else None


def excerpt(payload: bytes, limit: int = _EXCERPT) -> str:
    text = payload[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(payload) > limit else "")


def _reject_all(reason: RejectReason, detail: str) -> Decoded:
    return Decoded(rejections=[Rejection(reason, detail)])


def decode(
    topic: str,
    payload: bytes,
    registry: MeterLookup,
    now_ms: int,
    limits: DecodeLimits = DecodeLimits(),
) -> Decoded:
    """Decode one MQTT message. Pure: same inputs, same result; never raises on bad input."""
    if len(payload) > limits.max_payload_bytes:
        return _reject_all(
            RejectReason.PAYLOAD_TOO_LARGE,
            f"{len(payload)} bytes > limit {limits.max_payload_bytes}",
        )
    where = parse_topic(topic, limits.topic_prefix)
    if where is None:
        return _reject_all(
            RejectReason.BAD_TOPIC,
            f"topic {topic!r} is not {limits.topic_prefix}/<enterprise>/<gateway>/readings",
        )
    enterprise, _gateway = where
    try:
        doc = orjson.loads(payload)  # strict RFC 8259 and several times faster than json
    except orjson.JSONDecodeError:
        # What orjson refuses but the standard library reads (NaN/Infinity literals, integers
        # beyond 64 bits, UTF-16 payloads, lone surrogates) is judged on its merits below,
        # so both paths reject exactly the same input for exactly the same reason.
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return _reject_all(RejectReason.BAD_JSON, f"not JSON: {exc}"[:_EXCERPT])
    if not isinstance(doc, dict):
        return _reject_all(RejectReason.BAD_SHAPE, "payload is not a JSON object")

    items: list[Any]
    msg_ts_raw = doc.get("ts")
    if "readings" in doc:
        if not isinstance(doc["readings"], list):
            return _reject_all(RejectReason.BAD_SHAPE, "`readings` is not a list")
        items = doc["readings"]
    elif "meter" in doc:
        items = [doc]
        msg_ts_raw = None  # the single form carries its own ts
    else:
        return _reject_all(RejectReason.BAD_SHAPE, "neither `readings` nor `meter` present")
    if len(items) > limits.max_readings:
        return _reject_all(
            RejectReason.TOO_MANY_READINGS, f"{len(items)} readings > limit {limits.max_readings}"
        )

    msg_ts_ms: int | None = None
    msg_ts_bad = False
    if msg_ts_raw is not None:
        msg_ts_ms = parse_ts_ms(msg_ts_raw)
        msg_ts_bad = msg_ts_ms is None
    max_ms = now_ms + int(limits.max_future_skew_s * 1000)
    min_ms = limits.min_ts_ms(now_ms)

    readings: list[Reading] = []
    rejections: list[Rejection] = []
    meter_of = registry.meter
    for i, item in enumerate(items):
        # Fast path for the common, well-formed reading: a float value (finite: x - x is 0
        # only then), the registered unit or none, the message's ts or an integer epoch-ms ts.
        # Anything else takes `_decode_one`, which checks everything and names the reason.
        if type(item) is dict:
            meter_id: Any = item.get("meter")
            info = meter_of(meter_id) if type(meter_id) is str else None
            value = item.get("value")
            if (
                info is not None
                and info.enterprise_id == enterprise
                and type(value) is float
                and value - value == 0.0
                and item.get("unit", info.unit) == info.unit
            ):
                ts = item.get("ts", msg_ts_ms)
                if type(ts) is int and min_ms <= ts <= max_ms:
                    readings.append(
                        Reading(enterprise, meter_id, info.carrier, value, ts * _NS_PER_MS)
                    )
                    continue
        r = _decode_one(item, i, enterprise, registry, msg_ts_ms, msg_ts_bad, max_ms, min_ms)
        if isinstance(r, Reading):
            readings.append(r)
        else:
            rejections.append(r)
    return Decoded(readings, rejections)


def _decode_one(
    item: Any,
    i: int,
    enterprise: str,
    registry: MeterLookup,
    msg_ts_ms: int | None,
    msg_ts_bad: bool,
    max_ms: int,
    min_ms: int = MIN_TS_MS,
) -> Reading | Rejection:
    if not isinstance(item, dict):
        return Rejection(RejectReason.BAD_SHAPE, "reading is not a JSON object", index=i)
    meter_id = item.get("meter")
    if not isinstance(meter_id, str) or not meter_id:
        return Rejection(RejectReason.BAD_SHAPE, "reading has no `meter` string", index=i)
    info = registry.meter(meter_id)
    if info is None:
        return Rejection(
            RejectReason.UNKNOWN_METER, f"meter {meter_id!r} is not registered", meter_id, i
        )
    if info.enterprise_id != enterprise:
        return Rejection(
            RejectReason.WRONG_ENTERPRISE,
            f"meter {meter_id!r} belongs to {info.enterprise_id}, topic says {enterprise}",
            meter_id,
            i,
        )
    value = item.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejection(RejectReason.BAD_VALUE, f"value {value!r} is not a number", meter_id, i)
    try:
        value = float(value)
    except OverflowError:  # an integer beyond the float range
        return Rejection(
            RejectReason.NON_FINITE, "value is an integer beyond the float range", meter_id, i
        )
    if not math.isfinite(value):
        return Rejection(RejectReason.NON_FINITE, f"value {value!r} is not finite", meter_id, i)
    unit = item.get("unit")
    if unit is not None and unit != info.unit:
        if not isinstance(unit, str):
            return Rejection(
                RejectReason.UNIT_MISMATCH, f"unit {unit!r} is not a string", meter_id, i
            )
        try:
            value *= conversion_factor(unit, info.unit)
        except UnitError:
            return Rejection(
                RejectReason.UNIT_MISMATCH,
                f"unit {unit!r} does not convert to the registered {info.unit!r}",
                meter_id,
                i,
            )
        if not math.isfinite(value):
            return Rejection(
                RejectReason.NON_FINITE,
                f"value is beyond the float range in the registered {info.unit!r}",
                meter_id,
                i,
            )
    if "ts" in item:
        ts_ms = parse_ts_ms(item["ts"])
        if ts_ms is None:
            return Rejection(
                RejectReason.BAD_TIMESTAMP,
                f"ts {item['ts']!r} is unusable (RFC 3339 with offset, or epoch ms after 2000)",
                meter_id,
                i,
            )
    elif msg_ts_bad:
        return Rejection(RejectReason.BAD_TIMESTAMP, "the message `ts` is unusable", meter_id, i)
    elif msg_ts_ms is None:
        return Rejection(
            RejectReason.BAD_TIMESTAMP, "no `ts` on the reading or the message", meter_id, i
        )
    else:
        ts_ms = msg_ts_ms
    if ts_ms > max_ms:
        return Rejection(
            RejectReason.FUTURE_TIMESTAMP,
            f"ts {ts_ms} ms is {(ts_ms - max_ms) // 1000}s beyond the allowed skew",
            meter_id,
            i,
        )
    if ts_ms < min_ms:
        return Rejection(
            RejectReason.BEYOND_RETENTION,
            f"ts {ts_ms} ms is older than the raw readings are kept (from {min_ms} ms on)",
            meter_id,
            i,
        )
    return Reading(enterprise, meter_id, info.carrier, value, ts_ms * _NS_PER_MS)


# -- encoder side (simulators, tests, benchmarks) ----------------------------------------


def topic_for(enterprise: str, gateway: str, prefix: str = "greenmon/v1") -> str:
    return f"{prefix}/{enterprise}/{gateway}/readings"


def format_ts(ts_ms: int, tz_offset_minutes: int = 480) -> str:
    """Epoch ms -> RFC 3339 with the given offset (default +08:00, China Standard Time)."""
    dt = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(
        timezone(timedelta(minutes=tz_offset_minutes))
    )
    return dt.isoformat(timespec="milliseconds" if ts_ms % 1000 else "seconds")


def encode_batch(gateway: str, ts: str | int, readings: Iterable[Mapping[str, Any]]) -> bytes:
    """The batch form: one message, many readings (each may carry its own `ts`)."""
    doc = {"gateway": gateway, "ts": ts, "readings": list(readings)}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_single(meter: str, value: float, ts: str | int, unit: str | None = None) -> bytes:
    doc: dict[str, Any] = {"meter": meter, "value": value, "ts": ts}
    if unit is not None:
        doc["unit"] = unit
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
