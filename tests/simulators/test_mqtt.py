"""`GatewayClient`'s PUBACK fast path against the real broker and the installed paho.

The client reaches into paho internals (see `greenmon.simulators.mqtt`); these tests fail when
a paho upgrade moves them, rather than letting a publisher hang or miscount.
"""

from __future__ import annotations

import select
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from greenmon.simulators.mqtt import GatewayClient

pytestmark = pytest.mark.integration


def test_paho_internals_it_relies_on_are_there() -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    for name in ("_sock_recv", "_packet_read", "_do_on_publish", "_out_message_mutex",
                 "_msgtime_mutex", "_out_messages", "_in_packet", "_protocol",
                 "_last_bytes_received", "_sock", "_mid_generate", "_inflight_messages",
                 "_send_publish", "_raise_for_invalid_topic"):  # fmt: skip
        assert hasattr(client, name), name
    assert client._in_packet["command"] == 0


def _drive(client: paho.Client, until: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:  # type: ignore[operator]
        sock = client.socket()
        assert sock is not None
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            assert client.loop_read() == paho.MQTT_ERR_SUCCESS
        client.loop_write()
        client.loop_misc()


@pytest.mark.parametrize(("window", "fast"), [(1, False), (50, False), (0, False),
                                             (1, True), (50, True), (0, True)])  # fmt: skip
def test_every_puback_is_handled_once(mqtt_url: str, window: int, fast: bool) -> None:
    """Every message published (paho's `publish`, or `publish_qos1`) is acknowledged once,
    through ``on_publish``, and released."""
    host, port = mqtt_url.split("//")[1].split(":")
    client = GatewayClient(
        CallbackAPIVersion.VERSION2, client_id=f"fast-{window}-{fast}", protocol=paho.MQTTv311
    )
    client.max_inflight_messages_set(0)
    acked: list[int] = []
    client.on_publish = lambda _c, _u, mid, rc, _p: acked.append(mid) if not rc.is_failure else 0
    connected: list[bool] = []
    client.on_connect = lambda *_a: connected.append(True)
    client.connect(host, int(port))
    _drive(client, lambda: connected)
    assert connected
    n = 700  # more than 2**8 ids, a window at a time (0: all at once)
    infos: list[paho.MQTTMessageInfo] = []
    mids: list[int] = []
    topic = GatewayClient.check_topic("greenmon/test/fast")
    for i in range(n):
        if fast:
            assert client.publish_qos1(topic, f"m{i}".encode()) == paho.MQTT_ERR_SUCCESS
            mids.append(client._last_mid)
        else:
            infos.append(client.publish("greenmon/test/fast", f"m{i}".encode(), qos=1))
            mids.append(infos[-1].mid)
        if window and len(mids) - len(acked) >= window:
            _drive(client, lambda: len(mids) - len(acked) < window)
    _drive(client, lambda: len(acked) == n)
    assert sorted(acked) == sorted(mids)
    assert len(set(acked)) == n
    assert all(info.is_published() for info in infos)
    assert client._inflight_messages == 0
    assert not client._out_messages  # every message released
    assert client.buffered == 0
    # anything that is not a PUBACK still goes through paho: a PINGREQ is answered
    client._send_pingreq()
    assert client._ping_t > 0  # waiting for the PINGRESP
    _drive(client, lambda: client._ping_t == 0, timeout=5)
    assert client._ping_t == 0
    client.disconnect()


def test_a_new_connection_starts_with_nothing_read_ahead(mqtt_url: str) -> None:
    host, port = mqtt_url.split("//")[1].split(":")
    client = GatewayClient(CallbackAPIVersion.VERSION2, client_id="fresh", protocol=paho.MQTTv311)
    client.max_inflight_messages_set(0)
    acked: list[int] = []
    connects: list[bool] = []
    client.on_publish = lambda _c, _u, mid, _rc, _p: acked.append(mid)
    client.on_connect = lambda *_a: connects.append(True)
    client.connect(host, int(port))
    _drive(client, lambda: len(connects) == 1)
    client._ahead += b"\x40\x02\x00\x01"  # left over from the old connection: not a PUBACK now
    client.reconnect()
    assert client.buffered == 0
    _drive(client, lambda: len(connects) == 2)
    info = client.publish("greenmon/test/fresh", b"x", qos=1)
    _drive(client, lambda: bool(acked))
    assert acked == [info.mid]
    client.disconnect()


def test_publish_qos1_sends_what_publish_sends(mqtt_url: str) -> None:
    """The same topic and payload bytes arrive at a subscriber, at QoS 1, as with `publish`."""
    import threading

    host, port = mqtt_url.split("//")[1].split(":")
    got: list[tuple[str, bytes, int]] = []
    done = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="fast-sub", protocol=paho.MQTTv5)

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        got.append((msg.topic, bytes(msg.payload), msg.qos))
        if len(got) == 4:
            done.set()

    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.on_message = on_message
    sub.connect(host, int(port))
    sub.subscribe("greenmon/test/same/#", qos=1)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        client = GatewayClient(
            CallbackAPIVersion.VERSION2, client_id="fast-same", protocol=paho.MQTTv311
        )
        client.max_inflight_messages_set(0)
        acked: list[int] = []
        client.on_publish = lambda _c, _u, mid, _rc, _p: acked.append(mid)
        client.connect(host, int(port))
        _drive(client, lambda: client.is_connected())
        payloads = [b'{"v":1}', "能耗 €".encode(), b"", bytes(range(256)) * 600]  # 150 kB
        topics = ["greenmon/test/same/a", "greenmon/test/same/é", "greenmon/test/same/b",
                  "greenmon/test/same/a"]  # fmt: skip
        for t, p in zip(topics, payloads, strict=True):
            assert client.publish_qos1(GatewayClient.check_topic(t), p) == 0
        _drive(client, lambda: len(acked) == 4)
        assert done.wait(10)
        assert sorted(got) == sorted((t, p, 1) for t, p in zip(topics, payloads, strict=True))
        client.disconnect()
    finally:
        sub.loop_stop()
        sub.disconnect()


@pytest.mark.parametrize("topic", ["", "greenmon/+/x", "greenmon/#"])
def test_check_topic_refuses_what_publish_refuses(topic: str) -> None:
    with pytest.raises(ValueError):
        GatewayClient.check_topic(topic)
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    with pytest.raises(ValueError):
        client.publish(topic, b"x", qos=1)
