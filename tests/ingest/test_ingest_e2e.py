"""The ingestor end to end against the real Mosquitto and influxd: nothing lost, ever."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from greenmon.deploy.local import LocalServices
from tests.ingest.support import Publisher, message, stored, wait_stored

pytestmark = pytest.mark.integration


def _stream(pub: Publisher, first: int, count: int, per_msg: int, pause_every: int = 0,
            pause_s: float = 0.0) -> set[tuple[str, int, float]]:  # fmt: skip
    expected: set[tuple[str, int, float]] = set()
    for seq in range(first, first + count):
        topic, payload, exp = message(seq, per_msg)
        pub.publish(seq, topic, payload)
        expected.update(exp)
        if pause_every and seq % pause_every == 0:
            time.sleep(pause_s)
    return expected


def test_exact_counts_values_and_timestamps(
    services: LocalServices, database: str, start_ingest: Callable[..., object]
) -> None:
    ing = start_ingest(services.mqtt_url, services.influx_url, database, "--client-id", database)
    time.sleep(1.0)  # let it subscribe (its session then keeps everything anyway)
    pub = Publisher(services.mqtt_url, client_id="gw-" + database)
    try:
        expected = _stream(pub, 0, 200, per_msg=10)  # 2,000 readings in batch messages
        pub.wait_acked(200)
        assert len(pub.acked) == 200
        assert wait_stored(services.influx_url, database, len(expected)) == len(expected)
    finally:
        pub.close()
    summary = ing.stop()  # type: ignore[attr-defined]
    assert stored(services.influx_url, database) == expected
    assert summary["written"] == len(expected)
    assert summary["rejected"] == 0


def test_kill9_several_times_loses_nothing(
    services: LocalServices, database: str, start_ingest: Callable[..., object], tmp_path: Path
) -> None:
    args = (services.mqtt_url, services.influx_url, database, "--client-id", database)
    ing = start_ingest(*args)
    time.sleep(1.0)
    pub = Publisher(services.mqtt_url, client_id="gw-" + database)
    expected: set[tuple[str, int, float]] = set()
    try:
        for round_ in range(3):
            expected |= _stream(pub, round_ * 300, 300, per_msg=5, pause_every=50, pause_s=0.05)
            ing.kill9()  # type: ignore[attr-defined]
            ing = start_ingest(*args)
            time.sleep(0.5)
        pub.wait_acked(900)
        assert len(pub.acked) == 900
        n = wait_stored(services.influx_url, database, len(expected))
        assert n == len(expected)
        assert stored(services.influx_url, database) == expected
    finally:
        pub.close()
    ing.stop()  # type: ignore[attr-defined]


def test_influxdb_down_then_back_spools_and_drains(
    own_services: Callable[..., LocalServices],
    database: str,
    start_ingest: Callable[..., object],
) -> None:
    svc = own_services()
    ing = start_ingest(svc.mqtt_url, svc.influx_url, database, "--client-id", database)
    time.sleep(1.0)
    pub = Publisher(svc.mqtt_url, client_id="gw-" + database)
    try:
        expected = _stream(pub, 0, 100, per_msg=10)
        assert wait_stored(svc.influx_url, database, len(expected)) == len(expected)
        svc.stop("influxd")
        expected |= _stream(pub, 100, 200, per_msg=10, pause_every=20, pause_s=0.05)
        pub.wait_acked(300)
        # Acked by the broker and, by the ingestor, only once spooled: nothing is pending.
        time.sleep(2.0)
        svc.start("influxd")
        expected |= _stream(pub, 300, 100, per_msg=10)
        pub.wait_acked(400)
        assert wait_stored(svc.influx_url, database, len(expected)) == len(expected)
        assert stored(svc.influx_url, database) == expected
    finally:
        pub.close()
    summary = ing.stop()  # type: ignore[attr-defined]
    assert summary["spooled"] > 0, summary
    assert summary["spool_depth"] == 0, summary
