"""The MQTT consumer against the installed paho and a real Mosquitto.

`greenmon.ingest.mqtt._Client` reaches into paho internals for speed (read-ahead socket,
QoS 1 fast path, batched PUBACKs). These tests pin that behaviour: a paho upgrade that breaks
it fails here, not in production.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from greenmon.config import IngestSettings, Settings
from greenmon.ingest.mqtt import AckToken, MqttConsumer, _ReadAheadSocket

TOPIC = "greenmon/v1/E0001/gw-01/readings"


class _FakeSock:
    """Stands in for a socket only to count recv calls (the unit test of the read-ahead)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.calls = 0

    def recv(self, n: int) -> bytes:
        self.calls += 1
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)

    def fileno(self) -> int:
        return 42


def test_read_ahead_serves_small_reads_from_one_recv() -> None:
    raw = _FakeSock([b"\x30\x05hello\x30\x02hi", b""])
    sock = _ReadAheadSocket(raw)
    assert sock.recv(1) == b"\x30"
    assert sock.pending() == 10
    assert sock.recv(1) == b"\x05"
    assert sock.recv(5) == b"hello"
    assert sock.recv(100) == b"\x30\x02hi"  # what is buffered, without another recv
    assert raw.calls == 1
    assert sock.pending() == 0
    assert sock.recv(1) == b""  # end of stream passes through
    with pytest.raises(BlockingIOError):
        sock.recv(1)
    assert sock.fileno() == 42  # everything else is the socket's own


def publish_packet(
    topic: bytes, payload: bytes, mid: int, *, header: int = 0x32, properties: bytes = b"\x00"
) -> bytes:
    """An MQTT 5 PUBLISH (QoS 1, no properties unless given), any remaining-length size."""
    body = len(topic).to_bytes(2, "big") + topic
    if header & 0x06:
        body += mid.to_bytes(2, "big")
    body += properties + payload
    n, length = len(body), b""
    while True:
        n, byte = divmod(n, 128)
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            return bytes([header]) + length + body


def _filled(data: bytes) -> _ReadAheadSocket:
    sock = _ReadAheadSocket(_FakeSock([data]))
    assert sock.recv(0) == b""  # the read-ahead's one recv, as paho's first read does
    return sock


def test_take_publishes_hands_over_whole_qos1_packets_and_stops_at_anything_else() -> None:
    got: list[tuple[str, bytes, int]] = []

    def take(sock: _ReadAheadSocket) -> int:
        return sock.take_publishes(lambda t, p, m: got.append((t, p, m)))

    big = b"x" * 20_000  # a three-byte remaining length
    ours = publish_packet(b"a/b", b"one", 1) + publish_packet(b"a/b", big, 2, header=0x3B)
    qos0 = publish_packet(b"a/c", b"qos0", 0, header=0x30)
    cut = publish_packet(b"a/d", b"cut", 4)[:6]
    assert take(_ReadAheadSocket(_FakeSock([ours]))) == 0  # nothing read ahead yet

    sock = _filled(ours + qos0 + cut)
    assert take(sock) == 2  # DUP and RETAIN set: still a QoS 1 PUBLISH
    assert got == [("a/b", b"one", 1), ("a/b", big, 2)]
    assert sock.pending() == len(qos0) + len(cut)  # left for paho
    assert sock.recv(len(qos0)) == qos0

    got.clear()
    sock = _filled(ours[:-1])  # the second packet is cut by one byte
    assert take(sock) == 1 and got == [("a/b", b"one", 1)]
    props = publish_packet(b"a/b", b"p", 5, properties=b"\x02\x01\x01")
    assert take(_filled(props)) == 0  # properties: paho's path builds them
    suback = b"\x90\x03\x00\x01\x01"
    assert take(_filled(suback + ours)) == 0  # another packet type first


class Consumer:
    """An `MqttConsumer` running in a thread, recording what it gets and acking on request."""

    def __init__(self, mqtt_url: str, client_id: str, ack: bool = True) -> None:
        settings = Settings(mqtt_url=mqtt_url, ingest=IngestSettings(client_id=client_id))
        self.got: list[tuple[str, bytes]] = []
        self.fast = 0
        self.slow = 0
        self.ack = ack
        self.consumer = MqttConsumer(settings, self._on_message)
        client = self.consumer.client
        fast, slow = client.on_qos1_message, client.on_message
        assert fast is not None and slow is not None

        def count_fast(topic: str, payload: bytes, mid: int) -> None:
            self.fast += 1
            fast(topic, payload, mid)

        def count_slow(*args: object) -> None:
            self.slow += 1
            slow(*args)

        client.on_qos1_message = count_fast
        client.on_message = count_slow
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.consumer.run, args=(self.stop, lambda: None, lambda: None), daemon=True
        )
        self.thread.start()
        assert self.consumer.connected.wait(10)
        time.sleep(0.3)  # the SUBSCRIBE follows CONNACK

    def _on_message(self, topic: str, payload: bytes, token: AckToken | None) -> None:
        self.got.append((topic, payload))
        if self.ack:
            self.consumer.ack(token)

    def wait(self, n: int, timeout: float = 10) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.got

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


@pytest.fixture
def publish(mqtt_url: str) -> Iterator[object]:
    host, port = mqtt_url.split("//")[1].split(":")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-pub", protocol=paho.MQTTv5)
    client.connect(host, int(port))
    client.loop_start()

    def send(payload: bytes, properties: Properties | None = None) -> None:
        client.publish(TOPIC, payload, qos=1, properties=properties).wait_for_publish(10)

    yield send
    client.loop_stop()
    client.disconnect()


@pytest.mark.integration
def test_fast_path_fallback_and_batched_acks(mqtt_url: str, publish: object) -> None:
    send = publish  # type: ignore[assignment]
    first = Consumer(mqtt_url, "test-mqtt-acks")
    try:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = ("source", "test")
        payloads = [b"plain-%d" % i for i in range(200)]
        for p in payloads[:100]:
            send(p)  # type: ignore[operator]
        send(b"with-properties", props)  # type: ignore[operator]
        for p in payloads[100:]:
            send(p)  # type: ignore[operator]
        got = first.wait(201)
        assert [p for _, p in got] == [*payloads[:100], b"with-properties", *payloads[100:]]
        assert {t for t, _ in got} == {TOPIC}
        assert first.fast == 200 and first.slow == 1
    finally:
        first.close()
    # Every ack (sent in batches) reached the broker: nothing comes back on the same session;
    # the control message published now arrives alone.
    second = Consumer(mqtt_url, "test-mqtt-acks")
    try:
        send(b"control")  # type: ignore[operator]
        assert second.wait(1) == [(TOPIC, b"control")]
        time.sleep(0.5)
        assert second.got == [(TOPIC, b"control")]
    finally:
        second.close()


@pytest.mark.integration
def test_unacked_messages_come_back(mqtt_url: str, publish: object) -> None:
    send = publish  # type: ignore[assignment]
    silent = Consumer(mqtt_url, "test-mqtt-unacked", ack=False)
    try:
        for i in range(5):
            send(b"m%d" % i)  # type: ignore[operator]
        assert len(silent.wait(5)) == 5
    finally:
        silent.close()
    again = Consumer(mqtt_url, "test-mqtt-unacked")
    try:
        assert sorted(p for _, p in again.wait(5)) == [b"m%d" % i for i in range(5)]
    finally:
        again.close()
