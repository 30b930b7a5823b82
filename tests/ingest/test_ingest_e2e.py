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
    # Once subscribed, its persistent session keeps everything anyway.
    ing.wait_subscribed()  # type: ignore[attr-defined]
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
    ing.wait_subscribed()  # type: ignore[attr-defined]
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
    ing.wait_subscribed()  # type: ignore[attr-defined]
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


def test_broker_restart_loses_no_qos1_message(
    own_services: Callable[..., LocalServices],
    database: str,
    start_ingest: Callable[..., object],
) -> None:
    svc = own_services()
    ing = start_ingest(svc.mqtt_url, svc.influx_url, database, "--client-id", database)
    ing.wait_subscribed()  # type: ignore[attr-defined]
    pub = Publisher(svc.mqtt_url, client_id="gw-" + database)
    try:
        expected = _stream(pub, 0, 150, per_msg=4)
        pub.wait_acked(150)
        svc.restart("mosquitto")  # clean restart: persistence saves the sessions
        # The gateway's and the ingestor's sessions survive; both reconnect by themselves.
        expected |= _stream(pub, 150, 150, per_msg=4, pause_every=25, pause_s=0.05)
        pub.wait_acked(300, timeout=90)
        assert len(pub.acked) == 300
        acked = set()
        for seq in pub.acked:
            acked |= set(message(seq, 4)[2])
        assert wait_stored(svc.influx_url, database, len(acked)) >= len(acked)
        assert acked <= stored(svc.influx_url, database)
        assert acked == expected
    finally:
        pub.close()
    ing.stop()  # type: ignore[attr-defined]


def test_shared_group_splits_the_stream_and_survives_a_kill(
    services: LocalServices, database: str, start_ingest: Callable[..., object], tmp_path: Path
) -> None:
    def start(name: str) -> object:
        return start_ingest(
            services.mqtt_url, services.influx_url, database,
            "--client-id", f"{database}-{name}", "--shared-group", database,
            runtime=tmp_path / name,
        )  # fmt: skip

    a, b = start("a"), start("b")
    a.wait_subscribed()  # type: ignore[attr-defined]
    b.wait_subscribed()  # type: ignore[attr-defined]
    pub = Publisher(services.mqtt_url, client_id="gw-" + database)
    try:
        expected = _stream(pub, 0, 200, per_msg=5, pause_every=20, pause_s=0.02)
        b.kill9()  # type: ignore[attr-defined]
        expected |= _stream(pub, 200, 200, per_msg=5, pause_every=20, pause_s=0.02)
        pub.wait_acked(400)
        b = start("b")  # its persistent session gets back what it had not acknowledged
        assert wait_stored(services.influx_url, database, len(expected)) == len(expected)
        assert stored(services.influx_url, database) == expected
    finally:
        pub.close()
    sa = a.stop()  # type: ignore[attr-defined]
    sb = b.stop()  # type: ignore[attr-defined]
    # The stream was split: `a` took a share, and not all of it.
    assert 0 < sa["received"] < len(expected)
    assert sb["rejected"] == 0
