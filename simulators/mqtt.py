"""The simulated gateway's MQTT client: paho's, with fast paths for QoS 1 PUBLISH and PUBACK.

A publishing gateway receives little but MQTT 3.1.1 PUBACKs (4 bytes each). paho reads every
packet a byte at a time (three ``recv`` calls for a PUBACK) and builds a `ReasonCode` and a
`Properties` object for each, which is about a third of the publisher's CPU per message.
`GatewayClient` reads ahead (one ``recv`` serves every packet waiting) and handles the
PUBACKs at the front of what was read in one pass, through paho's own `_do_on_publish` (so
the message is released, its `MQTTMessageInfo` marked published and ``on_publish`` called as
paho would). Anything else (CONNACK, PINGRESP, MQTT 5) takes paho's own path, fed from the
read-ahead buffer. `GatewayClient.publish_qos1` is paho's `publish` at QoS 1 for a topic
checked once, without the `MQTTMessageInfo` paho builds per message (its condition variable is
the largest single cost of a publish) since the publisher learns of each PUBACK through
``on_publish``; the packet is still built and queued by paho (`_send_publish`). This touches
paho internals (`_sock_recv`, `_packet_read`, `_in_packet`, `_out_messages`,
`_out_message_mutex`, `_do_on_publish`, `_msgtime_mutex`, `_last_bytes_received`, `_sock`,
`_mid_generate`, `_inflight_messages`, `_send_publish`, `_raise_for_invalid_topic`), so it
lives here alone and tests/simulators/test_mqtt.py pins it against the installed paho.
"""

from __future__ import annotations

import time
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import MessageState, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["GatewayClient"]

_PUBACK: Final = 0x40  # fixed header of a PUBACK; remaining length 2 in MQTT 3.1.1
_READ_AHEAD: Final = 65536
# what paho passes on_publish for a 3.1.1 PUBACK (which carries neither), built once
_ACCEPTED: Final = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES: Final = Properties(PacketTypes.PUBACK)


class _NoWaiter(paho.MQTTMessageInfo):
    """The `MQTTMessageInfo` of every `publish_qos1` message: nobody waits on it."""

    __slots__ = ()

    def _set_as_published(self) -> None:
        pass


_NO_WAITER: Final = _NoWaiter(0)


class _Sent(paho.MQTTMessage):
    """A QoS 1 message as paho keeps it until its PUBACK (what `paho.Client.publish` stores,
    without a `MQTTMessageInfo` of its own)."""

    __slots__ = ()

    def __init__(self, mid: int, topic: bytes, payload: bytes) -> None:  # no super(): no info
        self.timestamp = time.monotonic()
        self.state = MessageState.MQTT_MS_WAIT_FOR_PUBACK
        self.dup = False
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self.qos = 1
        self.retain = False
        self.info = _NO_WAITER
        self.properties = None


class GatewayClient(paho.Client):
    """`paho.mqtt.client.Client` with read-ahead and batched MQTT 3.1.1 PUBACKs, and
    `publish_qos1`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ahead = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet handled (call `loop_read` again)."""
        return len(self._ahead)

    @staticmethod
    def check_topic(topic: str) -> bytes:
        """`topic` as `publish_qos1` takes it: UTF-8, checked as paho's `publish` checks it
        (ValueError: empty, a wildcard, too long)."""
        if not topic:
            raise ValueError("Invalid topic.")
        encoded = topic.encode("utf-8")
        paho.Client._raise_for_invalid_topic(encoded)
        return encoded

    def publish_qos1(self, topic: bytes, payload: bytes) -> MQTTErrorCode:
        """``publish(topic, payload, qos=1)`` for a `check_topic` topic and bytes, with no
        `MQTTMessageInfo` to wait on: the PUBACK comes through ``on_publish``. Needs paho's
        own window off (``max_inflight_messages_set(0)``): the message is sent at once."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if len(payload) > 268435455:
            raise ValueError("Payload too large.")
        mid = self._mid_generate()
        with self._out_message_mutex:
            if mid in self._out_messages:  # 65,535 unacknowledged, as paho refuses it
                return MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
            self._out_messages[mid] = _Sent(mid, topic, payload)
            self._inflight_messages += 1
            return self._send_publish(mid, topic, payload, 1, False, False, _NO_WAITER)

    def reconnect(self) -> MQTTErrorCode:
        self._ahead.clear()  # bytes of an old connection are no part of the new one
        return super().reconnect()

    def _sock_recv(self, bufsize: int) -> bytes:
        ahead = self._ahead
        if not ahead:
            data = super()._sock_recv(_READ_AHEAD)
            if len(data) <= bufsize:
                return data  # everything, or b"" (the broker closed the connection)
            ahead += data
        out = bytes(ahead[:bufsize])
        del ahead[:bufsize]
        return out

    def _packet_read(self) -> MQTTErrorCode:
        if self._in_packet["command"] != 0 or self._protocol != MQTTProtocolVersion.MQTTv311:
            return super()._packet_read()
        ahead = self._ahead
        if not ahead:
            try:
                data = super()._sock_recv(_READ_AHEAD)
            except OSError:  # nothing to read, or the connection broke: paho decides
                return super()._packet_read()
            if not data:
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            ahead += data
        n = 0
        while len(ahead) >= 4 and ahead[0] == _PUBACK and ahead[1] == 2:
            mid = (ahead[2] << 8) | ahead[3]
            del ahead[:4]
            n += 1
            with self._out_message_mutex:
                if mid in self._out_messages:  # as paho: an unknown id is ignored
                    self._do_on_publish(mid, _ACCEPTED, _NO_PROPERTIES)
        if not n:
            return super()._packet_read()
        with self._msgtime_mutex:
            self._last_bytes_received = time.monotonic()
        return MQTTErrorCode.MQTT_ERR_SUCCESS
