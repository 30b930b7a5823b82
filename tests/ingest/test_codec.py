"""Decoding is pure: one table of cases, good and bad, batch and single forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenmon.ingest.codec import (
    DecodeLimits,
    Reading,
    RejectReason,
    decode,
    encode_batch,
    encode_single,
    format_ts,
    parse_topic,
    parse_ts_ms,
    topic_for,
)
from greenmon.registry import Registry, load_registry

R = RejectReason
T = "greenmon/v1/E0001/gw-01/readings"
TS = "2025-06-01T08:15:00+08:00"
TS_MS = 1748736900000  # the same instant
NOW = TS_MS + 3_600_000  # one hour later
NS = 1_000_000


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(Path(__file__).parent.parent / "data" / "registry")


def j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def rd(meter: str, value: float, ts_ms: int = TS_MS, carrier: str = "electricity") -> Reading:
    ent = meter.split("-")[0]
    return Reading(ent, meter, carrier, value, ts_ms * NS)


# (id, topic, payload, expected readings, expected rejection reasons in order)
CASES: list[tuple[str, str, bytes, list[Reading], list[RejectReason]]] = [
    (
        "batch, message ts",
        T,
        j(
            {
                "gateway": "gw-01",
                "ts": TS,
                "readings": [
                    {"meter": "E0001-EL-MAIN", "value": 123456.78, "unit": "kWh"},
                    {"meter": "E0001-NG-MAIN", "value": 8812.5, "ts": TS_MS - 900_000},
                ],
            }
        ),
        [
            rd("E0001-EL-MAIN", 123456.78),
            rd("E0001-NG-MAIN", 8812.5, TS_MS - 900_000, "natural_gas"),
        ],
        [],
    ),
    (
        "single form, epoch ms",
        T,
        j({"meter": "E0001-EL-MAIN", "value": 5, "ts": TS_MS}),
        [rd("E0001-EL-MAIN", 5.0)],
        [],
    ),
    (
        "single form, RFC 3339 Z with millis",
        T,
        j({"meter": "E0001-EL-MAIN", "value": 1.5, "ts": "2025-06-01T00:15:00.250Z"}),
        [rd("E0001-EL-MAIN", 1.5, TS_MS + 250)],
        [],
    ),
    (
        "unit converts: Wh to registered kWh",
        T,
        j({"meter": "E0001-EL-MAIN", "value": 2500, "unit": "Wh", "ts": TS_MS}),
        [rd("E0001-EL-MAIN", 2.5)],
        [],
    ),
    (
        "unit converts: kg to registered t",
        T,
        j({"meter": "E0001-DS-01", "value": 250, "unit": "kg", "ts": TS_MS}),
        [rd("E0001-DS-01", 0.25, carrier="diesel")],
        [],
    ),
    ("payload too large", T, b" " * (256 * 1024 + 1), [], [R.PAYLOAD_TOO_LARGE]),
    (
        "bad topic: wrong prefix",
        "other/E0001/gw-01/readings",
        j({"meter": "E0001-EL-MAIN", "value": 1, "ts": TS_MS}),
        [],
        [R.BAD_TOPIC],
    ),
    (
        "bad topic: missing gateway",
        "greenmon/v1/E0001/readings",
        j({"meter": "E0001-EL-MAIN", "value": 1, "ts": TS_MS}),
        [],
        [R.BAD_TOPIC],
    ),
    ("bad json", T, b'{"meter": "E0001-EL-MAIN", "value": ', [], [R.BAD_JSON]),
    ("not utf-8", T, b"\xff\xfe\x00garbage", [], [R.BAD_JSON]),
    ("json array", T, b"[1, 2]", [], [R.BAD_SHAPE]),
    ("object without readings or meter", T, j({"gateway": "gw-01"}), [], [R.BAD_SHAPE]),
    ("readings not a list", T, j({"ts": TS, "readings": {"a": 1}}), [], [R.BAD_SHAPE]),
    (
        "too many readings",
        T,
        j({"ts": TS, "readings": [{"meter": "E0001-EL-MAIN", "value": 1}] * 5001}),
        [],
        [R.TOO_MANY_READINGS],
    ),
    (
        "one bad reading never blocks the good ones beside it",
        T,
        j(
            {
                "ts": TS,
                "readings": [
                    {"meter": "E0001-EL-MAIN", "value": 1},
                    {"meter": "NOPE", "value": 1},
                    {"meter": "E0002-EL-MAIN", "value": 1},
                    {"meter": "E0001-NG-MAIN", "value": "12"},
                    {"meter": "E0001-EL-MAIN", "value": True},
                    {"meter": "E0001-EL-MAIN", "value": 1, "unit": "m3"},
                    {"meter": "E0001-EL-MAIN", "value": 1, "unit": 7},
                    {"meter": "E0001-EL-MAIN", "value": 1, "ts": "yesterday"},
                    {"meter": "E0001-EL-MAIN", "value": 1, "ts": NOW + 301_000},
                    ["not", "an", "object"],
                    {"value": 1},
                    {"meter": "E0001-NG-MAIN", "value": 2},
                ],
            }
        ),
        [rd("E0001-EL-MAIN", 1.0), rd("E0001-NG-MAIN", 2.0, carrier="natural_gas")],
        [
            R.UNKNOWN_METER,
            R.WRONG_ENTERPRISE,
            R.BAD_VALUE,
            R.BAD_VALUE,
            R.UNIT_MISMATCH,
            R.UNIT_MISMATCH,
            R.BAD_TIMESTAMP,
            R.FUTURE_TIMESTAMP,
            R.BAD_SHAPE,
            R.BAD_SHAPE,
        ],
    ),
    (
        "NaN value",
        T,
        b'{"meter": "E0001-EL-MAIN", "value": NaN, "ts": 1748736900000}',
        [],
        [R.NON_FINITE],
    ),
    (
        "Infinity value",
        T,
        b'{"meter": "E0001-EL-MAIN", "value": -Infinity, "ts": 1748736900000}',
        [],
        [R.NON_FINITE],
    ),
    ("null value", T, j({"meter": "E0001-EL-MAIN", "value": None, "ts": TS_MS}), [], [R.BAD_VALUE]),
    (
        "integer value beyond the float range",
        T,
        b'{"meter": "E0001-EL-MAIN", "value": 1' + b"0" * 400 + b', "ts": 1748736900000}',
        [],
        [R.NON_FINITE],
    ),
    (
        "finite value that overflows once converted",
        T,
        j({"meter": "E0001-EL-MAIN", "value": 1.5e306, "unit": "MWh", "ts": TS_MS}),
        [],
        [R.NON_FINITE],
    ),
    (
        "integer ts beyond the float range",
        T,
        b'{"meter": "E0001-EL-MAIN", "value": 1.5, "ts": 1' + b"0" * 400 + b"}",
        [],
        [R.FUTURE_TIMESTAMP],
    ),
    (
        "no timestamp anywhere",
        T,
        j({"readings": [{"meter": "E0001-EL-MAIN", "value": 1}]}),
        [],
        [R.BAD_TIMESTAMP],
    ),
    (
        "naive local time refused",
        T,
        j({"meter": "E0001-EL-MAIN", "value": 1, "ts": "2025-06-01T08:15:00"}),
        [],
        [R.BAD_TIMESTAMP],
    ),
    (
        "epoch seconds instead of ms",
        T,
        j({"meter": "E0001-EL-MAIN", "value": 1, "ts": 1748736900}),
        [],
        [R.BAD_TIMESTAMP],
    ),
    (
        "bad message ts rejects readings that rely on it, not those with their own",
        T,
        j(
            {
                "ts": "garbage",
                "readings": [
                    {"meter": "E0001-EL-MAIN", "value": 1},
                    {"meter": "E0001-EL-MAIN", "value": 2, "ts": TS_MS},
                ],
            }
        ),
        [rd("E0001-EL-MAIN", 2.0)],
        [R.BAD_TIMESTAMP],
    ),
    (
        "future beyond skew",
        T,
        j({"meter": "E0001-EL-MAIN", "value": 1, "ts": NOW + 300_001}),
        [],
        [R.FUTURE_TIMESTAMP],
    ),
    (
        "future within skew",
        T,
        j({"meter": "E0001-EL-MAIN", "value": 1, "ts": NOW + 300_000}),
        [rd("E0001-EL-MAIN", 1.0, NOW + 300_000)],
        [],
    ),
    (
        "m3 is not Nm3",
        T,
        j({"meter": "E0001-NG-MAIN", "value": 1, "unit": "Nm3", "ts": TS_MS}),
        [],
        [R.UNIT_MISMATCH],
    ),
    (
        "wrong enterprise in topic",
        "greenmon/v1/E0002/gw-01/readings",
        j({"meter": "E0001-EL-MAIN", "value": 1, "ts": TS_MS}),
        [],
        [R.WRONG_ENTERPRISE],
    ),
]


@pytest.mark.parametrize(
    ("topic", "payload", "readings", "reasons"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decode_table(
    registry: Registry,
    topic: str,
    payload: bytes,
    readings: list[Reading],
    reasons: list[RejectReason],
) -> None:
    out = decode(topic, payload, registry, NOW)
    assert out.readings == readings
    assert [r.reason for r in out.rejections] == reasons
    assert all(r.detail for r in out.rejections)


def test_rejections_point_at_the_reading(registry: Registry) -> None:
    payload = j(
        {
            "ts": TS,
            "readings": [{"meter": "E0001-EL-MAIN", "value": 1}, {"meter": "ZZZ", "value": 1}],
        }
    )
    (rej,) = decode(T, payload, registry, NOW).rejections
    assert (rej.index, rej.meter) == (1, "ZZZ")


def test_decode_is_deterministic(registry: Registry) -> None:
    for _, topic, payload, _, _ in CASES:
        assert decode(topic, payload, registry, NOW) == decode(topic, payload, registry, NOW)


def test_limits_are_configurable(registry: Registry) -> None:
    limits = DecodeLimits(topic_prefix="plant/a", max_future_skew_s=0)
    p = j({"meter": "E0001-EL-MAIN", "value": 1, "ts": NOW + 1})
    assert decode("plant/a/E0001/g/readings", p, registry, NOW, limits).rejections[0].reason == (
        R.FUTURE_TIMESTAMP
    )
    p2 = j({"meter": "E0001-EL-MAIN", "value": 1, "ts": NOW})
    assert len(decode("plant/a/E0001/g/readings", p2, registry, NOW, limits).readings) == 1


def test_encoder_round_trips(registry: Registry) -> None:
    topic = topic_for("E0001", "gw-07")
    assert parse_topic(topic, "greenmon/v1") == ("E0001", "gw-07")
    batch = encode_batch(
        "gw-07",
        format_ts(TS_MS),
        [
            {"meter": "E0001-EL-MAIN", "value": 10.25, "unit": "kWh"},
            {"meter": "E0001-NG-MAIN", "value": 3.0, "ts": TS_MS + 1},
        ],
    )
    out = decode(topic, batch, registry, NOW)
    assert out.rejections == []
    assert out.readings == [
        rd("E0001-EL-MAIN", 10.25),
        rd("E0001-NG-MAIN", 3.0, TS_MS + 1, "natural_gas"),
    ]
    single = encode_single("E0001-EL-MAIN", 7.0, TS_MS, unit="MWh")
    assert decode(topic, single, registry, NOW).readings == [rd("E0001-EL-MAIN", 7000.0)]


@pytest.mark.parametrize(
    ("raw", "ms"),
    [
        (TS, TS_MS),
        ("2025-06-01T00:15:00Z", TS_MS),
        ("2025-06-01T00:15:00.001+00:00", TS_MS + 1),
        (TS_MS, TS_MS),
        (float(TS_MS), TS_MS),
        ("2025-06-01", None),
        (True, None),
        (None, None),
        (float("nan"), None),
        (123, None),
    ],
)
def test_parse_ts(raw: object, ms: int | None) -> None:
    assert parse_ts_ms(raw) == ms


def test_format_ts_is_china_time() -> None:
    assert format_ts(TS_MS) == TS


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(topic=st.text(max_size=60), payload=st.binary(max_size=512))
def test_decode_never_raises_on_arbitrary_bytes(
    registry: Registry, topic: str, payload: bytes
) -> None:
    out = decode(topic, payload, registry, NOW)
    assert len(out.readings) + len(out.rejections) >= 1
    assert all(isinstance(r, Reading) for r in out.readings)


def test_a_gas_meter_registered_in_nm3(tmp_path: Path) -> None:
    """Nm3 is registrable for gas (the aggregator converts it to the coefficients' m3): the
    ingestor accepts readings in Nm3, or without a unit, and refuses m3 (no conditions)."""
    import shutil

    root = tmp_path / "registry"
    shutil.copytree(Path(__file__).parent.parent / "data" / "registry", root)
    meters = root / "meters.csv"
    meters.write_text(
        meters.read_text(encoding="utf-8").replace(
            "E0001-NG-MAIN,E0001,natural_gas,m3,", "E0001-NG-MAIN,E0001,natural_gas,Nm3,"
        ),
        encoding="utf-8",
    )
    reg = load_registry(root)
    info = reg.meter("E0001-NG-MAIN")
    assert info is not None and info.unit == "Nm3"
    payload = j(
        {
            "gateway": "gw-01",
            "ts": TS,
            "readings": [
                {"meter": "E0001-NG-MAIN", "value": 10.0, "unit": "Nm3"},
                {"meter": "E0001-NG-MAIN", "value": 11.0, "ts": TS_MS + 900_000},
                {"meter": "E0001-NG-MAIN", "value": 12.0, "unit": "m3", "ts": TS_MS + 1_800_000},
            ],
        }
    )
    out = decode(T, payload, reg, NOW)
    assert out.readings == [
        rd("E0001-NG-MAIN", 10.0, carrier="natural_gas"),
        rd("E0001-NG-MAIN", 11.0, TS_MS + 900_000, carrier="natural_gas"),
    ]
    assert [r.reason for r in out.rejections] == [R.UNIT_MISMATCH]
