"""The plain-case fast path is exact or declines: whenever it returns readings they are those
`codec.decode` accepts, and decode would have rejected nothing. And `format_lines` writes the
schema's lines, each value as text that reads back (in InfluxDB too) as the same double."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenmon.influx import InfluxClient
from greenmon.ingest.codec import (
    DecodeLimits,
    Reading,
    encode_batch,
    encode_single,
    format_ts,
    topic_for,
)
from greenmon.ingest.codec import decode as codec_decode
from greenmon.ingest.fastpath import (
    PlainReadings,
    SeriesTable,
    format_lines,
    plain_readings,
    series_prefix,
)
from greenmon.lineprotocol import format_line
from greenmon.registry import Registry, load_registry
from tests.ingest.test_codec import CASES, NOW, NS, TS, TS_MS

LIMITS = DecodeLimits()


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(Path(__file__).parent.parent / "data" / "registry")


@pytest.fixture(scope="module")
def table(registry: Registry) -> SeriesTable:
    return SeriesTable(registry.meter_infos())


def check_exact(
    topic: str, payload: bytes, registry: Registry, table: SeriesTable, now: int = NOW
) -> PlainReadings | None:
    fast = plain_readings(topic, payload, table, now, LIMITS)
    out = codec_decode(topic, payload, registry, now, LIMITS)
    if fast is not None:
        assert out.rejections == [], payload
        slow = table.columns(out.readings)
        assert fast.prefixes == slow.prefixes, payload
        # .hex() tells -0.0 from 0.0, and 1.0 from 1.0000000000000002
        assert [v.hex() for v in fast.values] == [v.hex() for v in slow.values], payload
        assert all(type(v) is float for v in fast.values)
        assert fast.suffixes == slow.suffixes, payload
        assert fast.max_ts_ms == slow.max_ts_ms, payload
    return fast


@pytest.mark.parametrize(("topic", "payload"), [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_codec_table_is_exact_or_declined(
    registry: Registry, table: SeriesTable, topic: str, payload: bytes
) -> None:
    check_exact(topic, payload, registry, table)


T = topic_for("E0001", "gw-01")
PLAIN = [
    encode_batch(
        "gw-01",
        TS,
        [
            {"meter": "E0001-EL-MAIN", "value": 123456.78, "unit": "kWh"},
            {"meter": "E0001-NG-MAIN", "value": 8812.5, "ts": TS_MS - 900_000},
            {"meter": "E0001-EL-MAIN", "value": 7, "ts": format_ts(TS_MS - 1)},
        ],
    ),
    encode_batch("gw-01", TS_MS, [{"meter": "E0001-EL-MAIN", "value": -0.0}]),
    encode_single("E0001-EL-MAIN", 1.5, TS_MS, unit="kWh"),
    encode_single("E0001-EL-MAIN", 2.25, "2025-06-01T00:15:00.001Z"),
    encode_batch("gw-01", TS, []),
]


@pytest.mark.parametrize("payload", PLAIN)
def test_plain_messages_take_the_fast_path(
    registry: Registry, table: SeriesTable, payload: bytes
) -> None:
    fast = check_exact(T, payload, registry, table)
    assert fast is not None


def test_lines_are_the_schema_lines(table: SeriesTable) -> None:
    fast = plain_readings(T, PLAIN[0], table, NOW, LIMITS)
    assert fast is not None
    tags = {"carrier": "electricity", "enterprise": "E0001", "meter": "E0001-EL-MAIN"}
    gas = {**tags, "carrier": "natural_gas", "meter": "E0001-NG-MAIN"}
    assert format_lines(fast).decode().split("\n") == [
        format_line("meter_reading", tags, {"value": 123456.78}, TS_MS * 1_000_000),
        format_line("meter_reading", gas, {"value": 8812.5}, (TS_MS - 900_000) * 1_000_000),
        format_line("meter_reading", tags, {"value": 7.0}, (TS_MS - 1) * 1_000_000),
        "",
    ]
    assert fast.max_ts_ms == TS_MS
    assert format_lines(table.columns([])) == b""


EDGE_VALUES = [0.0, -0.0, 1e16, 1e-7, 2.5e-5, 5e-324, 1.7976931348623157e308, -1e21, 0.1 + 0.2]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=60)
    | st.just(EDGE_VALUES),
    ts=st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000),
)
def test_values_read_back_as_the_same_double(
    registry: Registry, table: SeriesTable, values: list[float], ts: int
) -> None:
    meters = ["E0001-EL-MAIN", "E0001-NG-MAIN"]
    readings = [
        Reading("E0001", meters[i % 2], "x", v, ts * 1_000_000) for i, v in enumerate(values)
    ]
    body = format_lines(table.columns(readings))
    lines = body.decode().split("\n")
    assert lines.pop() == ""
    assert len(lines) == len(values)
    for i, (line, v) in enumerate(zip(lines, values, strict=True)):
        prefix = table.prefix("E0001", meters[i % 2]).decode()
        assert line.startswith(prefix)
        text, stamp = line[len(prefix) :].split(" ")
        assert stamp == str(ts * 1_000_000)
        assert float(text).hex() == v.hex()


@pytest.mark.integration
def test_influxdb_reads_every_value_format_back(
    influx_url: str, database: str, table: SeriesTable
) -> None:
    values = [*EDGE_VALUES, 123456.78, -8812.5]
    ts = [TS_MS + i for i in range(len(values))]
    readings = [
        Reading("E0001", "E0001-EL-MAIN", "x", v, t * NS) for v, t in zip(values, ts, strict=True)
    ]
    with InfluxClient(influx_url, database) as client:
        client.ensure_database()
        try:
            assert client.write_body(format_lines(table.columns(readings)), len(values)) == len(
                values
            )
            got = client.query("SELECT value FROM meter_reading ORDER BY time", epoch="ms")
            assert got["time"].to_list() == ts
            # (InfluxDB prints 5e-324 and 1.8e308 in full, which the CSV reader leaves as text.)
            back = [float(v).hex() for v in got["value"].to_list()]
            assert back == [v.hex() for v in values]
        finally:
            client.drop_database()


def test_prefix_escapes_tag_values() -> None:
    assert series_prefix("E 1", "m,1", "el=c") == (
        rb"meter_reading,carrier=el\=c,enterprise=E\ 1,meter=m\,1 value="
    )


@pytest.mark.parametrize(
    "payload",
    [
        b'{"meter": "E0001-EL-MAIN", "value": 1.5, "ts": 1748736900000, "unit": "MWh"}',
        b'{"meter": "E0001-EL-MAIN", "value": 1.5, "ts": 1748736900000, "gateway": "\xed\xa0\x80"}',
        b'{"meter": "E0001-EL-MAIN", "value": true, "ts": 1748736900000}',
        b'{"meter": "E0001-EL-MAIN", "value": NaN, "ts": 1748736900000}',
        b'{"meter": "E0001-EL-MAIN", "value": 1.5, "ts": null}',
        b'{"readings": [{"meter": "E0001-EL-MAIN", "value": 1.5}]}',
        b'{"ts": "garbage", "readings": [{"meter": "E0001-EL-MAIN", "value": 1.5}]}',
        b'{"readings": null, "meter": "E0001-EL-MAIN", "value": 1.5, "ts": 1748736900000}',
        b'{"meter": "E0002-EL-MAIN", "value": 1.5, "ts": 1748736900000}',
        b'[{"meter": "E0001-EL-MAIN", "value": 1.5, "ts": 1748736900000}]',
    ],
)
def test_anything_not_plain_is_declined(
    registry: Registry, table: SeriesTable, payload: bytes
) -> None:
    assert check_exact(T, payload, registry, table) is None


def test_future_and_limits_decline(registry: Registry, table: SeriesTable) -> None:
    future = encode_single("E0001-EL-MAIN", 1.5, NOW + 300_001)
    assert check_exact(T, future, registry, table) is None
    edge = encode_single("E0001-EL-MAIN", 1.5, NOW + 300_000)
    assert check_exact(T, edge, registry, table) is not None
    assert plain_readings(T, edge, table, NOW, DecodeLimits(max_payload_bytes=10)) is None
    many = encode_batch("g", TS_MS, [{"meter": "E0001-EL-MAIN", "value": 1.0}] * 3)
    assert plain_readings(T, many, table, NOW, DecodeLimits(max_readings=2)) is None
    assert plain_readings("other/E0001/g/readings", edge, table, NOW, LIMITS) is None
    assert plain_readings(topic_for("E9999", "g"), edge, table, NOW, LIMITS) is None


# -- generated messages: a mix of plain and every kind of odd -------------------------

METERS = ["E0001-EL-MAIN", "E0001-NG-MAIN", "E0002-EL-MAIN", "NOPE", "", 5, None]
VALUES: list[Any] = [1.5, -0.0, 7, 2**53 + 1, 10**400, True, "3", None, float("nan"), 1e308]
UNITS: list[Any] = [None, "kWh", "MWh", "Wh", "m3", "Nm3", "GJ", 3]
TSS: list[Any] = [TS_MS, TS, "2025-06-01T00:15:00Z", "garbage", 1748736900, NOW + 10**9]
TSS += [float(TS_MS), True, None, 10**400, "2025-06-01T08:15:00"]
ABSENT = object()
REGISTERED_UNIT = {"E0001-EL-MAIN": "kWh", "E0001-NG-MAIN": "m3"}


def reading_doc(meter: Any, value: Any, unit: Any, ts: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"meter": meter, "value": value}
    if unit is not ABSENT:
        doc["unit"] = unit
    if ts is not ABSENT:
        doc["ts"] = ts
    return doc


readings_st = st.builds(
    reading_doc,
    st.sampled_from(METERS[:2]) | st.sampled_from(METERS),
    st.sampled_from(VALUES[:3]) | st.sampled_from(VALUES) | st.floats(allow_nan=True),
    st.sampled_from([ABSENT, None, "kWh"]) | st.sampled_from(UNITS),
    st.sampled_from([ABSENT, TS_MS]) | st.sampled_from(TSS) | st.integers(),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    single=st.booleans(),
    msg_ts=st.sampled_from([ABSENT, TS, TS_MS]) | st.sampled_from(TSS),
    items=st.lists(readings_st | st.sampled_from([5, "x", None, []]), max_size=6),
)
def test_generated_messages_are_exact_or_declined(
    registry: Registry, table: SeriesTable, single: bool, msg_ts: Any, items: list[Any]
) -> None:
    if single and items and isinstance(items[0], dict):
        doc: Any = items[0]
    else:
        doc = {"gateway": "gw-01", "readings": items}
        if msg_ts is not ABSENT:
            doc["ts"] = msg_ts
    check_exact(T, json.dumps(doc).encode(), registry, table)


def test_mostly_plain_streams_take_the_fast_path(registry: Registry, table: SeriesTable) -> None:
    """A seeded stream in which one reading in twenty is odd: exact throughout, and the fast
    path takes exactly the messages with no odd reading."""
    rng = random.Random(7)
    taken = plain = 0
    for _ in range(2000):
        odd_count = 0
        items = []
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.05:
                odd_count += 1
                items.append(
                    reading_doc(
                        rng.choice(METERS[2:]), rng.choice(VALUES), rng.choice(UNITS), "garbage"
                    )
                )
            else:
                meter = rng.choice(METERS[:2])
                items.append(
                    reading_doc(
                        meter,
                        rng.choice([rng.uniform(-1e6, 1e6), rng.randint(0, 10**6)]),
                        rng.choice([ABSENT, None, REGISTERED_UNIT[meter]]),
                        rng.choice([ABSENT, TS_MS - rng.randint(0, 10**9), TS]),
                    )
                )
        payload = encode_batch("gw-01", rng.choice([TS, TS_MS]), items)
        fast = check_exact(T, payload, registry, table)
        plain += odd_count == 0
        taken += fast is not None
        assert (fast is not None) == (odd_count == 0)
    assert taken == plain > 1000


@pytest.mark.parametrize("literal", [b"NaN", b"-Infinity", b"1e400", b"-1e309", b"1" + b"0" * 400])
def test_a_non_finite_or_out_of_range_value_is_declined(
    registry: Registry, table: SeriesTable, literal: bytes
) -> None:
    """The fast path relies on msgspec for this instead of testing every value."""
    payload = b'{"meter": "E0001-EL-MAIN", "ts": 1748736900000, "value": ' + literal + b"}"
    assert check_exact(T, payload, registry, table) is None


@pytest.mark.parametrize(
    "payload",
    [
        # duplicate keys: the last one counts, in the codec (orjson) and here (msgspec)
        b'{"ts":1748736900000,"readings":[{"meter":"E0001-EL-MAIN","value":1.0,"value":2.5}]}',
        b'{"ts":1,"readings":[],"ts":1748736900000,"readings":[{"meter":"E0001-EL-MAIN",'
        b'"value":3.5}]}',
        b'{"ts":1748736900000,"readings":[{"meter":"NOPE","meter":"E0001-NG-MAIN","value":1}]}',
        # escaped keys and values
        b'{"ts":1748736900000,"readings":[{"\\u006deter":"E0001-\\u0045L-MAIN","value":4.5}]}',
        # numbers: exponent, integer beyond 2**53 and beyond 64 bits, negative zero
        b'{"ts":1748736900000,"readings":[{"meter":"E0001-EL-MAIN","value":1.5E3},'
        b'{"meter":"E0001-EL-MAIN","value":9007199254740993},'
        b'{"meter":"E0001-EL-MAIN","value":18446744073709551617},'
        b'{"meter":"E0001-EL-MAIN","value":-0}]}',
        # extra fields of any type, anywhere
        b'{"gateway":{"a":[1,null]},"ts":1748736900000,"readings":[{"meter":"E0001-EL-MAIN",'
        b'"value":1.5,"quality":"good","x":[true]}]}',
    ],
)
def test_odd_but_valid_json_is_exact(
    registry: Registry, table: SeriesTable, payload: bytes
) -> None:
    assert check_exact(T, payload, registry, table) is not None


_NOISE = list(b'"{}[],:0123456789.eE+- \\\ntrufalsn\x00\x01\x7f\xed\xff')


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "500")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    base=st.sampled_from(PLAIN),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["set", "insert", "delete"]),
                  st.sampled_from(_NOISE)),
        min_size=1,
        max_size=4,
    ),
)  # fmt: skip
def test_mutated_payloads_are_exact_or_declined(
    registry: Registry, table: SeriesTable, base: bytes, edits: list[tuple[int, str, int]]
) -> None:
    """Whatever the parser accepts that the codec refuses (or reads differently) shows here."""
    data = bytearray(base)
    for at, how, byte in edits:
        at %= len(data) + 1
        if how == "insert" or at == len(data):
            data.insert(at, byte)
        elif how == "set":
            data[at] = byte
        else:
            del data[at]
    check_exact(T, bytes(data), registry, table)
