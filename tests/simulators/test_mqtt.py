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
                 "_last_bytes_received"):  # fmt: skip
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


@pytest.mark.parametrize("window", [1, 50, 0])
def test_every_puback_is_handled_once(mqtt_url: str, window: int) -> None:
    host, port = mqtt_url.split("//")[1].split(":")
    client = GatewayClient(
        CallbackAPIVersion.VERSION2, client_id=f"fast-{window}", protocol=paho.MQTTv311
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
    for i in range(n):
        infos.append(client.publish("greenmon/test/fast", f"m{i}".encode(), qos=1))
        if window and len(infos) - len(acked) >= window:
            _drive(client, lambda: len(infos) - len(acked) < window)
    _drive(client, lambda: len(acked) == n)
    assert sorted(acked) == sorted(info.mid for info in infos)
    assert len(set(acked)) == n
    assert all(info.is_published() for info in infos)
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
