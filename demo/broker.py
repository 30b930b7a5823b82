"""What the demo leaves on the broker, cleaned before it runs again.

This module owns the two traces a previous demo leaves on the local Mosquitto: the persistent
session of its ingestor's client id (messages queued for it while it was away would be
delivered into the new database), and the retained alert states
(``greenmon/v1/alerts/{scope}/{subject}``) of subjects the new run may never publish again.
"""

from __future__ import annotations

import contextlib
import threading
import time

__all__ = ["clean_session", "clear_retained"]


def _host_port(mqtt_url: str) -> tuple[str, int]:
    host, port = mqtt_url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def clean_session(mqtt_url: str, client_id: str) -> None:
    """Drop the broker's persistent session of `client_id` (what a previous demo left)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = _host_port(mqtt_url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    with contextlib.suppress(OSError):
        client.connect(host, port, clean_start=True)
        client.loop_start()
        time.sleep(0.3)
        client.disconnect()
        client.loop_stop()


def clear_retained(mqtt_url: str, topic_filter: str, settle_s: float = 0.5) -> int:
    """Delete every retained message under `topic_filter` (an empty retained payload deletes
    one); returns how many there were."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    host, port = _host_port(mqtt_url)
    topics: set[str] = set()
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.retain and msg.payload:
            with lock:
                topics.add(msg.topic)

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.on_message = on_message
    try:
        client.connect(host, port)
    except OSError:
        return 0
    client.loop_start()
    try:
        client.subscribe(topic_filter, qos=1)
        time.sleep(settle_s)  # retained messages arrive right after SUBACK
        with lock:
            found = sorted(topics)
        for topic in found:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(found)
