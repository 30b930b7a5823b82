"""Ingest test helpers: run `greenmon ingest` as a real process, publish, count points."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from greenmon.config import load_settings
from greenmon.influx import InfluxClient
from greenmon.ingest.codec import encode_batch, topic_for
from greenmon.retention import ensure_retention

REGISTRY = Path(__file__).parent.parent / "data" / "registry"
GREENMON = shutil.which("greenmon", path=str(Path(sys.executable).parent)) or "greenmon"
E1_METERS = ["E0001-EL-MAIN", "E0001-EL-WELD", "E0001-NG-MAIN"]
BASE_MS = 1_748_736_000_000  # 2025-06-01T00:00:00Z


@dataclass
class IngestProc:
    args: list[str]
    runtime: Path
    proc: subprocess.Popen[str] | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    log: Path = field(init=False)
    _log_from: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.log = self.runtime / "ingest.log"

    def start(self) -> IngestProc:
        self.runtime.mkdir(parents=True, exist_ok=True)
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            [GREENMON, "ingest", *self.args, "--json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **self.env},
        )
        out.close()
        return self

    def wait_subscribed(self, timeout: float = 60) -> IngestProc:
        """Until the broker confirmed the subscription (the ingestor logs it): messages
        published from then on reach it, however slowly it started."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log.open("rb") as fh:
                fh.seek(self._log_from)
                if b"subscribed to" in fh.read():
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ingest exited ({self.proc.returncode}):\n{self.log.read_text()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"ingest did not subscribe in {timeout} s:\n{self.log.read_text()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> dict[str, object]:
        """SIGTERM, expect exit 0, return the --json summary."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(60)
        text = self.log.read_text()
        assert rc == 0, text
        start = text.rfind("\n{\n")
        return json.loads(text[start:]) if start >= 0 else {}


def ingest_args(mqtt_url: str, influx_url: str, database: str, runtime: Path,
                *extra: str, registry: Path = REGISTRY) -> list[str]:  # fmt: skip
    return [
        "--mqtt-url", mqtt_url, "--influx-url", influx_url, "--database", database,
        "--registry", str(registry), "--runtime-dir", str(runtime), "--metrics-port", "0",
        *extra,
    ]  # fmt: skip


def own_registry(tmp_path: Path) -> Path:
    """A copy of the test registry a test may edit."""
    root = tmp_path / "registry"
    shutil.copytree(REGISTRY, root)
    return root


class Publisher:
    """A QoS 1 gateway: knows which messages the broker acknowledged (PUBACK)."""

    def __init__(self, mqtt_url: str, client_id: str = "test-gw") -> None:
        host, port = mqtt_url.split("//")[1].split(":")
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.sent: dict[int, paho.MQTTMessageInfo] = {}
        self.client.connect(host, int(port), clean_start=False)
        self.client.loop_start()

    @property
    def acked(self) -> set[int]:
        return {seq for seq, info in list(self.sent.items()) if info.is_published()}

    def publish(self, seq: int, topic: str, payload: bytes) -> None:
        # Like a gateway that buffers while offline: wait for the connection to come back.
        deadline = time.monotonic() + 30
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.sent[seq] = self.client.publish(topic, payload, qos=1)

    def wait_acked(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def message(seq: int, per_msg: int) -> tuple[str, bytes, list[tuple[str, int, float]]]:
    """Message `seq`: `per_msg` readings of E0001 meters, unique (meter, ts) per reading."""
    readings = []
    expected = []
    for k in range(per_msg):
        n = seq * per_msg + k
        meter = E1_METERS[n % len(E1_METERS)]
        ts = BASE_MS + n * 1000
        value = round(n * 0.5 + 0.25, 3)
        readings.append({"meter": meter, "value": value, "ts": ts})
        expected.append((meter, ts * 1_000_000, value))
    return topic_for("E0001", "gw-01"), encode_batch("gw-01", BASE_MS, readings), expected


def client(influx_url: str, database: str) -> InfluxClient:
    """A client that finds raw readings where `greenmon ingest` puts them (the retention
    layout of the default settings), with that layout created in `database`."""
    settings = load_settings(influx_url=influx_url, database=database)
    c = InfluxClient.from_settings(settings)
    ensure_retention(c, settings, alter=False)
    return c


def stored(influx_url: str, database: str) -> set[tuple[str, int, float]]:
    with client(influx_url, database) as c:
        df = c.query(f'SELECT "value" FROM {c.source("meter_reading")} GROUP BY "meter"')
    if df.is_empty():
        return set()
    return set(zip(df["meter"].to_list(), df["time"].to_list(), df["value"].to_list(),
                   strict=True))  # fmt: skip


def wait_stored(influx_url: str, database: str, n: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        with client(influx_url, database) as c:
            df = c.query(f'SELECT COUNT("value") FROM {c.source("meter_reading")}')
        count = int(df["count"][0]) if not df.is_empty() else 0
        if count >= n:
            return count
        time.sleep(0.25)
    return count
