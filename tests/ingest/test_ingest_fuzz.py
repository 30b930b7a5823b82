"""Garbage interleaved with good data, through the real broker and influxd.

A seeded fuzzer makes a few thousand malformed messages of known kinds (each kind has one
right reason) and interleaves them with valid ones. The ingestor must stay alive, store every
valid reading, and dead-letter every bad one with the right reason.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from greenmon.deploy.local import LocalServices
from greenmon.ingest.codec import encode_single, topic_for
from greenmon.ingest.deadletter import letter_files, read_letters
from tests.ingest.support import BASE_MS, Publisher, message, stored, wait_stored

pytestmark = pytest.mark.integration

TOPIC = topic_for("E0001", "gw-01")


def _bad(rng: random.Random) -> tuple[str, bytes, str]:
    """One malformed message: (topic, payload, the reason it must be rejected for)."""
    ts = BASE_MS + rng.randrange(10**6) * 1000
    good = encode_single("E0001-EL-MAIN", rng.uniform(0, 1e6), ts)
    kind = rng.randrange(11)
    if kind == 0:  # any proper prefix of a JSON object is not JSON
        return TOPIC, good[: rng.randrange(1, len(good))], "bad_json"
    if kind == 1:
        return TOPIC, b"\xff" + rng.randbytes(rng.randrange(0, 64)), "bad_json"
    if kind == 2:
        meter = "X" + "".join(rng.choices("ABCDEF0123456789-", k=rng.randrange(1, 20)))
        return TOPIC, encode_single(meter, 1.0, ts), "unknown_meter"
    if kind == 3:
        return TOPIC, encode_single("E0002-EL-MAIN", 1.0, ts), "wrong_enterprise"
    if kind == 4:
        v = rng.choice([math.nan, math.inf, -math.inf])
        return (
            TOPIC,
            json.dumps({"meter": "E0001-EL-MAIN", "value": v, "ts": ts}).encode(),
            ("non_finite"),
        )
    if kind == 5:
        unit = rng.choice(["GJ", "m3", "t", "kg", "kwh", "MJ"])
        return TOPIC, encode_single("E0001-EL-MAIN", 1.0, ts, unit=unit), "unit_mismatch"
    if kind == 6:
        future = int(time.time() * 1000) + rng.randrange(10**7, 10**9)
        return TOPIC, encode_single("E0001-EL-MAIN", 1.0, future), "future_timestamp"
    if kind == 7:
        value = rng.choice(['"12.5"', "null", "true", "[1]", "{}"])
        return (
            TOPIC,
            f'{{"meter":"E0001-EL-MAIN","value":{value},"ts":{ts}}}'.encode(),
            ("bad_value"),
        )
    if kind == 8:
        return TOPIC, rng.choice([b"[]", b"42", b'"x"', b"null", b'{"gateway":"g"}']), "bad_shape"
    if kind == 9:
        return TOPIC, b"{" + b" " * (256 * 1024) + b"}", "payload_too_large"
    return rng.choice(["greenmon/v1/E0001/readings", "greenmon/v2/E0001/g/readings",
                       "greenmon/v1/E0001/g/status", "greenmon/v1/E0001//readings",
                       "greenmon/v1//gw-01/readings"]), good, "bad_topic"  # fmt: skip


def test_fuzzed_garbage_never_stops_or_blocks_good_data(
    services: LocalServices, database: str, start_ingest: Callable[..., object], tmp_path: Path
) -> None:
    rng = random.Random(20261126)
    ing = start_ingest(services.mqtt_url, services.influx_url, database, "--client-id", database)
    ing.wait_subscribed()  # type: ignore[attr-defined]
    pub = Publisher(services.mqtt_url, client_id="gw-" + database)
    expected: set[tuple[str, int, float]] = set()
    reasons: Counter[str] = Counter()
    n_good = 300
    seq = 0
    try:
        for i in range(n_good):
            topic, payload, exp = message(i, 3)
            pub.publish(seq, topic, payload)
            seq += 1
            expected.update(exp)
            for _ in range(10):  # 3,000 bad messages in all
                btopic, bpayload, reason = _bad(rng)
                # The broker drops messages on topics the ingestor does not subscribe to;
                # those can't reach it, so they are not expected in its dead letters.
                levels = btopic.split("/")
                if (
                    len(levels) == 5
                    and levels[:2] == ["greenmon", "v1"]
                    and levels[4] == "readings"
                ):
                    reasons[reason] += 1
                pub.publish(seq, btopic, bpayload)
                seq += 1
        pub.wait_acked(seq, timeout=120)
        assert len(pub.acked) == seq
        assert wait_stored(services.influx_url, database, len(expected)) == len(expected)
        assert stored(services.influx_url, database) == expected
    finally:
        pub.close()
    summary = ing.stop()  # type: ignore[attr-defined]
    dead = Path(str(summary["dead_letters"]))
    # Every rejection is a dead letter (the file rotated on the way: all files are read).
    got = Counter(
        r.reason for letter in read_letters(letter_files(dead)) for r in letter.rejections
    )
    assert got == reasons
    assert summary["rejected_by_reason"] == dict(reasons)
    assert summary["written"] == len(expected)
