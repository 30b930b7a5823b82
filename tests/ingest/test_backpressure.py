"""Backpressure and self-monitoring: when InfluxDB stops answering, the ingestor stops taking
messages (the broker keeps them) instead of growing a queue, and says so on /metrics; when it
answers again, every reading arrives exactly once."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from greenmon.deploy.local import free_port
from tests.ingest.support import Publisher, message, stored, wait_stored

pytestmark = pytest.mark.integration


class HoldingProxy:
    """A TCP relay in front of the real influxd that can hold requests mid-flight (what a
    stalled or overloaded InfluxDB looks like from the ingestor), then let them through."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = threading.Event()
        self.open.set()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, gated: bool) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                if gated:
                    self.open.wait()
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop = True
        self.open.set()
        self.server.close()


@pytest.fixture
def proxy(influx_url: str) -> Iterator[HoldingProxy]:
    p = HoldingProxy(int(influx_url.rsplit(":", 1)[1]))
    yield p
    p.close()


def scrape(port: int) -> dict[str, float]:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        s.name: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if not s.labels
    }


def wait_for(check: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_stalled_influx_stops_intake_then_everything_arrives(
    mqtt_url: str,
    influx_url: str,
    database: str,
    proxy: HoldingProxy,
    start_ingest: Callable[..., object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GREENMON_INGEST__MAX_INFLIGHT_WRITES", "1")
    metrics_port = free_port()
    ing = start_ingest(
        mqtt_url, proxy.url, database,
        "--client-id", database, "--batch-lines", "100", "--metrics-port", str(metrics_port),
    )  # fmt: skip
    assert wait_for(lambda: _connected(metrics_port)), "ingestor did not come up"
    time.sleep(0.5)  # SUBSCRIBE follows CONNACK

    proxy.open.clear()  # InfluxDB "hangs" from now on
    pub = Publisher(mqtt_url, client_id="gw-" + database)
    expected: set[tuple[str, int, float]] = set()
    try:
        for seq in range(3000):
            topic, payload, readings = message(seq, 1)
            pub.publish(seq, topic, payload)
            expected |= set(readings)
        pub.wait_acked(3000)
        assert len(pub.acked) == 3000  # the broker has every message
        time.sleep(2.0)
        held = scrape(metrics_port)
        # One write in flight, one full batch waiting for its slot: the network loop stopped
        # taking messages; the rest waits at the broker, not in our memory.
        assert held["greenmon_ingest_inflight_writes"] == 1
        assert held["greenmon_ingest_backpressure_waits_total"] >= 1
        assert 100 <= held["greenmon_ingest_messages_received_total"] <= 201
        assert held["greenmon_ingest_readings_written_total"] == 0

        proxy.open.set()
        assert wait_stored(influx_url, database, 3000) == 3000
        assert stored(influx_url, database) == expected
        assert wait_for(
            lambda: scrape(metrics_port)["greenmon_ingest_readings_written_total"] == 3000
        )
        after = scrape(metrics_port)
        assert after["greenmon_ingest_messages_received_total"] == 3000
        assert after["greenmon_ingest_readings_spooled_total"] == 0
        assert after["greenmon_ingest_spool_depth_records"] == 0
        assert after["greenmon_ingest_inflight_writes"] == 0
        assert after["greenmon_ingest_mqtt_connected"] == 1
    finally:
        pub.close()
    summary = ing.stop()  # type: ignore[attr-defined]
    assert summary["written"] == 3000


def _connected(port: int) -> bool:
    try:
        return scrape(port).get("greenmon_ingest_mqtt_connected") == 1
    except httpx.HTTPError:
        return False
