"""The MQTT side of the ingestor: connection life, subscription, manual acknowledgements.

Owns one paho-mqtt 2.x client (MQTT 5, `manual_ack=True`, persistent session with a fixed
client id and a session expiry, a receive-maximum that bounds what the broker sends before we
acknowledge). This thread alone touches the client: acknowledgements from writer threads are
queued and sent here. Reconnection is ours, forever, with capped exponential backoff and
jitter; each state change is logged once. An acknowledgement carries the connection
generation it was received on: a message received before a reconnect is redelivered by the
broker with the same packet id, so an ack from the old connection is dropped rather than
risking acknowledging a different message that reuses the id.

Speed: paho reads each packet's header a byte at a time, one ``recv`` system call each, and
`loop()` handles one packet per ``select``. The client here reads ahead (one ``recv`` of up to
256 KiB serves many packets) and the loop drains whatever was read before selecting again;
acknowledgements go out as one write of many PUBACK packets rather than one system call each,
and a QoS 1 PUBLISH without MQTT 5 properties (what gateways send) is handed over without
building paho's `MQTTMessage` and `Properties` objects (a third of the CPU per message); whole
such packets already read ahead are parsed in one pass between packets, without paho's
per-packet `_packet_read` bookkeeping. These touch paho internals (`_create_socket`,
`_packet_queue`, `_handle_publish`, `_packet_read`, `_in_packet`, `_msgtime_mutex`), so
they live in `_Client` alone, fall back to paho's own path for anything else, and
tests/ingest/test_mqtt.py pins them against the installed paho.
"""

from __future__ import annotations

import logging
import queue
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from greenmon.config import Settings
from greenmon.influx import backoff_delay

log = logging.getLogger("greenmon.ingest.mqtt")

AckToken = tuple[int, int]  # (connection generation, packet id)
OnMessage = Callable[[str, bytes, AckToken | None], None]


_READ_AHEAD = 256 * 1024
_PUBACK = struct.Struct("!BBH")
_MAX_BURST = 2000  # packets handled between acknowledgement rounds


class _ReadAheadSocket:
    """Wraps paho's socket so that one ``recv`` serves many small reads; everything else is
    the socket's own. `pending` tells paho (and our loop) that bytes are waiting."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(_READ_AHEAD)  # BlockingIOError etc. propagate to paho
            if not data:
                return data
            self._buf, self._pos = data, 0
        start = self._pos
        self._pos = min(start + bufsize, len(self._buf))
        return self._buf[start : self._pos]

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + int(inner)

    def take_publishes(self, handler: Callable[[str, bytes, int], None]) -> int:
        """Hand every whole QoS 1 PUBLISH without properties at the front of the buffer to
        `handler` as (topic, payload, packet id), consuming it; stop at anything else (other
        packet types, properties, a packet cut by the end of the buffer), which paho then reads
        as usual. Returns how many were handed over."""
        buf = self._buf
        end = len(buf)
        pos = self._pos
        n = 0
        while pos + 5 <= end and buf[pos] & 0xF6 == 0x32:  # PUBLISH, QoS 1 (DUP/RETAIN any)
            # Remaining length: 1 to 4 bytes, 7 bits each, least significant first.
            p = pos + 1
            length = mult = 0
            while p < end and p - pos <= 4:
                byte = buf[p]
                p += 1
                length |= (byte & 0x7F) << mult
                mult += 7
                if byte < 0x80:
                    break
            else:
                break  # cut by the end of the buffer, or malformed: paho decides
            stop = p + length
            topic_end = p + 2 + ((buf[p] << 8) | buf[p + 1]) if p + 2 <= end else end
            if stop > end or topic_end + 3 > stop or buf[topic_end + 2] != 0:
                break
            try:
                topic = buf[p + 2 : topic_end].decode("utf-8")
            except UnicodeDecodeError:
                break
            mid = (buf[topic_end] << 8) | buf[topic_end + 1]
            self._pos = pos = stop  # consumed before the handler runs
            n += 1
            handler(topic, buf[topic_end + 3 : stop], mid)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Client(paho.Client):
    #: called as (topic, payload, packet id) for QoS 1 messages without properties
    on_qos1_message: Callable[[str, bytes, int], None] | None = None

    def _handle_publish(self) -> MQTTErrorCode:
        handler = self.on_qos1_message
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        # PUBLISH variable header: topic length (2), topic, packet id (2), properties length.
        if handler is not None and (header & 0x06) == 0x02 and len(packet) >= 2:
            end = 2 + ((packet[0] << 8) | packet[1])
            if len(packet) > end + 2 and packet[end + 2] == 0:
                try:
                    topic = bytes(packet[2:end]).decode("utf-8")
                except UnicodeDecodeError:
                    return super()._handle_publish()
                handler(topic, bytes(packet[end + 3 :]), (packet[end] << 8) | packet[end + 1])
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_publish()

    def _packet_read(self) -> MQTTErrorCode:
        # Between packets, whole QoS 1 PUBLISH packets already read ahead are handed over in
        # one pass, without paho's per-packet bookkeeping (its `_packet_read` is most of the
        # remaining CPU per message); everything else takes paho's own path.
        sock, handler = self.read_ahead, self.on_qos1_message
        if (
            sock is not None
            and handler is not None
            and self._in_packet["command"] == 0
            and sock.take_publishes(handler)
        ):
            with self._msgtime_mutex:
                self._last_bytes_received = paho.time_func()
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    read_ahead: _ReadAheadSocket | None = None

    def _create_socket(self) -> Any:
        self.read_ahead = _ReadAheadSocket(super()._create_socket())
        return self.read_ahead

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK (QoS 1) every packet id in `mids` with one queued write. The bytes are exactly
        paho's own PUBACK (`!BBH`: type, remaining length 2, packet id; MQTT 5 allows leaving
        out the reason code when it is 0, success)."""
        if len(mids) == 1:
            self.ack(mids[0], 1)
            return
        blob = b"".join(_PUBACK.pack(0x40, 2, mid) for mid in mids)
        self._packet_queue(0x40, blob, 0, 1)


def subscription_topic(prefix: str, shared_group: str | None) -> str:
    topic = f"{prefix}/+/+/readings"
    return f"$share/{shared_group}/{topic}" if shared_group else topic


def reconnect_delay(attempt: int) -> float:
    """Capped exponential backoff with full jitter (the InfluxDB client's own formula)."""
    return backoff_delay(attempt + 1, base=0.5, cap=30.0)


class MqttConsumer:
    def __init__(self, settings: Settings, on_message: OnMessage) -> None:
        assert settings.mqtt_url is not None
        url = urlsplit(settings.mqtt_url)
        self.host = url.hostname or "127.0.0.1"
        self.tls = url.scheme == "mqtts"
        self.port = url.port or (8883 if self.tls else 1883)
        ing = settings.ingest
        self.settings = settings
        self.topic = subscription_topic(settings.mqtt_topic_prefix, ing.shared_group)
        self._on_message_cb = on_message
        self._acks: queue.SimpleQueue[AckToken] = queue.SimpleQueue()
        self.generation = 0
        self.connected = threading.Event()
        self.on_state: Callable[[bool], None] | None = None
        self.client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=ing.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if settings.mqtt_username:
            pw = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            self.client.username_pw_set(settings.mqtt_username, pw)
        if self.tls:
            self.client.tls_set(
                ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
                certfile=str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
                keyfile=str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_qos1_message = self._on_qos1_message
        self.client.max_inflight_messages_set(1000)

    # -- callbacks (network thread) ------------------------------------------------------
    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        present = getattr(flags, "session_present", False)
        log.warning("connected to %s:%d (session present: %s)", self.host, self.port, present)
        client.subscribe(self.topic, qos=1)
        self.connected.set()
        if self.on_state:
            self.on_state(True)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any, props: Any = None
    ) -> None:
        # Logged once the broker confirms: from here on no message for us is dropped.
        failed = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]
        if failed:
            log.error("broker refused the subscription to %s: %s", self.topic, failed[0])
        else:
            log.warning("subscribed to %s", self.topic)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        if self.connected.is_set():
            log.warning("disconnected from broker: %s", rc)
        self.connected.clear()
        if self.on_state:
            self.on_state(False)

    def _on_qos1_message(self, topic: str, payload: bytes, mid: int) -> None:
        self._on_message_cb(topic, payload, (self.generation, mid))

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        token = (self.generation, msg.mid) if msg.qos > 0 else None
        self._on_message_cb(msg.topic, bytes(msg.payload), token)

    # -- any thread ----------------------------------------------------------------------
    def ack(self, token: AckToken | None) -> None:
        if token is not None:
            self._acks.put(token)

    # -- the loop ------------------------------------------------------------------------
    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.ingest.session_expiry_s
        props.ReceiveMaximum = self.settings.ingest.receive_maximum
        return props

    def _send_acks(self) -> None:
        mids: list[int] = []
        while True:
            try:
                gen, mid = self._acks.get_nowait()
            except queue.Empty:
                break
            if gen == self.generation:
                mids.append(mid)
        if mids:
            self.client.ack_many(mids)

    def run(
        self, stop: threading.Event, tick: Callable[[], None], drain: Callable[[], object]
    ) -> None:
        """Run until `stop` is set; then `drain` (flush + wait writes), send acks, disconnect."""
        attempt = 0
        first = True
        while not stop.is_set():
            try:
                if first:
                    self.client.connect(
                        self.host,
                        self.port,
                        keepalive=self.settings.ingest.keepalive_s,
                        clean_start=False,
                        properties=self._connect_properties(),
                    )
                    first = False
                else:
                    self.client.reconnect()
                self.generation += 1
            except (OSError, ssl.SSLError) as exc:
                delay = reconnect_delay(attempt)
                if attempt == 0:
                    log.warning(
                        "cannot reach broker %s:%d (%s); retrying", self.host, self.port, exc
                    )
                attempt += 1
                stop.wait(delay)
                continue
            attempt = 0
            while not stop.is_set():
                rc = self.client.loop(timeout=0.005)
                burst = 0
                while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and burst < _MAX_BURST:
                    sock = self.client.read_ahead
                    if sock is None or not sock.pending():
                        break
                    rc = self.client.loop_read()
                    burst += 1
                self._send_acks()
                tick()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
            if not stop.is_set():
                stop.wait(reconnect_delay(0))
        # Graceful shutdown: messages not yet handed over stay unacked (the broker keeps
        # them for our session); everything handed over is written, then acknowledged.
        drain()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self._send_acks()
            if self.client.loop(timeout=0.01) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._acks.empty() and not self.client.want_write():
                break
        self.client.disconnect()
        self.client.loop(timeout=0.1)
