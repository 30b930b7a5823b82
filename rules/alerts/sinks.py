"""Where alert transitions go: InfluxDB ``alert`` points, MQTT retained state, webhooks.

Each sink has a lifecycle — `setup` (connect), `send` (deliver some outbox rows, in order;
return the ids delivered), `close` — and fails only with `SinkError`, carrying how long to
wait when the far side said so (rate limits). Sinks never see the evaluation: they read the
durable outbox (`greenmon.rules.alerts.store`), driven by `greenmon.rules.alerts.delivery`,
so a sink that is down or slow delays nothing but itself.

- `InfluxSink` writes the outbox's line-protocol lines (DESIGN.md §3 ``alert``: one point per
  transition, tags scope/subject/rule, fields level, state, value, threshold, message).
- `MqttSink` publishes each subject's current state, retained, QoS 1, on
  ``{prefix}/alerts/{scope}/{subject}``, so a client connecting later sees it at once.
- `WebhookSink` POSTs JSON in the generic, DingTalk or WeCom format (`webhook`), at most
  ``max_per_minute`` messages a minute; its URL (a secret) is shown masked.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from greenmon.config import Settings, WebhookSettings
from greenmon.influx import InfluxClient, InfluxError
from greenmon.rules.alerts.errors import SinkError
from greenmon.rules.alerts.store import OutboxRow
from greenmon.rules.alerts.webhook import bodies, dingtalk_signed_url, mask_url, response_error

__all__ = ["InfluxSink", "MqttSink", "Sink", "WebhookSink"]

log = logging.getLogger("greenmon.rules.alerts")


class Sink(ABC):
    """Set up, send, close (see the module docstring)."""

    name: str
    batch: int = 500  # outbox rows handed to one `send`

    @abstractmethod
    def setup(self) -> None: ...

    @abstractmethod
    def send(self, rows: list[OutboxRow]) -> list[int]:
        """Deliver `rows` in order; return the ids delivered (a prefix of them when the sink
        had to stop early, e.g. a rate limit). Raises `SinkError` when nothing went out."""

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return self.name


class InfluxSink(Sink):
    name = "influx"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client: InfluxClient | None = None

    def setup(self) -> None:
        try:
            self.client = InfluxClient.from_settings(self.settings, max_retries=1, timeout=5.0)
            self.client.ensure_database()
        except InfluxError as exc:
            self.close()
            raise SinkError(f"InfluxDB: {exc}") from exc

    def send(self, rows: list[OutboxRow]) -> list[int]:
        assert self.client is not None
        try:
            self.client.write([str(r.payload["line"]) for r in rows], precision="ms")
        except InfluxError as exc:
            raise SinkError(f"InfluxDB: {exc}") from exc
        return [r.id for r in rows]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def describe(self) -> str:
        return f"influx ({self.settings.influx_url}, database {self.settings.database})"


class MqttSink(Sink):
    name = "mqtt"
    batch = 1000

    def __init__(self, settings: Settings, *, timeout: float = 5.0) -> None:
        if settings.mqtt_url is None:
            raise SinkError("no MQTT broker configured")
        url = urlsplit(settings.mqtt_url)
        self.settings = settings
        self.tls = url.scheme == "mqtts"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (8883 if self.tls else 1883)
        self.timeout = timeout
        self.client: paho.Client | None = None
        self._connected = threading.Event()

    def setup(self) -> None:
        s = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.alerts.mqtt_client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        if s.mqtt_username:
            pw = s.mqtt_password.get_secret_value() if s.mqtt_password else None
            client.username_pw_set(s.mqtt_username, pw)
        if self.tls:
            client.tls_set(
                ca_certs=str(s.mqtt_ca_file) if s.mqtt_ca_file else None,
                certfile=str(s.mqtt_cert_file) if s.mqtt_cert_file else None,
                keyfile=str(s.mqtt_key_file) if s.mqtt_key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self._connected.clear()
        refused: list[str] = []

        def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
            if rc.is_failure:
                refused.append(str(rc))
            self._connected.set()

        client.on_connect = on_connect
        client.connect_timeout = self.timeout
        try:
            client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"MQTT {self.host}:{self.port}: {exc}") from exc
        client.loop_start()
        self.client = client
        if not self._connected.wait(self.timeout) or refused:
            self.close()
            reason = refused[0] if refused else "no answer"
            raise SinkError(f"MQTT {self.host}:{self.port}: connection refused ({reason})")

    def send(self, rows: list[OutboxRow]) -> list[int]:
        assert self.client is not None
        infos = []
        for row in rows:
            payload = json.dumps(row.payload["payload"], ensure_ascii=False).encode()
            infos.append(
                (row.id, self.client.publish(row.payload["topic"], payload, qos=1, retain=True))
            )
        done: list[int] = []
        deadline = time.monotonic() + self.timeout
        for row_id, info in infos:
            left = max(0.0, deadline - time.monotonic())
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError) as exc:
                if done:
                    return done
                raise SinkError(f"MQTT {self.host}:{self.port}: {exc}") from exc
            if not info.is_published():
                if done:
                    return done
                raise SinkError(f"MQTT {self.host}:{self.port}: no PUBACK in {self.timeout} s")
            done.append(row_id)
        return done

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.disconnect()
                self.client.loop_stop()
            finally:
                self.client = None

    def describe(self) -> str:
        return f"mqtt ({self.host}:{self.port}, retained)"


class WebhookSink(Sink):
    batch = 200

    def __init__(self, hook: WebhookSettings, name: str, title: str = "greenmon 能耗告警") -> None:
        self.hook = hook
        self.name = f"webhook:{name}"
        self.title = title
        self.client: httpx.Client | None = None
        self._sent: deque[float] = deque()

    def setup(self) -> None:
        self.client = httpx.Client(
            timeout=self.hook.timeout_s, follow_redirects=False, headers={"User-Agent": "greenmon"}
        )

    def _url(self) -> str:
        url = self.hook.url.get_secret_value()
        if self.hook.format == "dingtalk" and self.hook.secret is not None:
            url = dingtalk_signed_url(
                url, self.hook.secret.get_secret_value(), int(time.time() * 1000)
            )
        return url

    def _wait_for_slot(self) -> float:
        """Seconds until another message may go (0: now), by ``max_per_minute``."""
        now = time.monotonic()
        while self._sent and now - self._sent[0] >= 60:
            self._sent.popleft()
        if len(self._sent) < self.hook.max_per_minute:
            return 0.0
        return 60 - (now - self._sent[0])

    def send(self, rows: list[OutboxRow]) -> list[int]:
        assert self.client is not None
        done: list[int] = []
        # one message per group of rows: rows are grouped so that a message never mixes a
        # delivered and an undelivered row
        per_message = 1 if self.hook.format == "generic" else 10
        for i in range(0, len(rows), per_message):
            group = rows[i : i + per_message]
            for body in bodies(self.hook.format, [r.payload for r in group], self.title):
                wait = self._wait_for_slot()
                if wait > 0:
                    if done:
                        return done
                    raise SinkError(
                        f"{self.hook.max_per_minute} messages a minute reached", retry_after=wait
                    )
                try:
                    resp = self.client.post(self._url(), json=body)
                except httpx.HTTPError as exc:
                    if done:
                        return done
                    text = self._scrub(str(exc)) or "no answer"
                    raise SinkError(f"{text} ({type(exc).__name__})") from None
                self._sent.append(time.monotonic())
                problem = response_error(self.hook.format, resp.status_code, resp.content)
                if problem is not None:
                    if done:
                        return done
                    raise SinkError(problem[0], retry_after=problem[1])
            done.extend(r.id for r in group)
        return done

    def _scrub(self, text: str) -> str:
        """`text` without the URL's secrets (an error message may quote the URL)."""
        url = self.hook.url.get_secret_value()
        secrets = [url, *(v for _, v in parse_qsl(urlsplit(url).query) if len(v) >= 4)]
        if self.hook.secret is not None:
            secrets.append(self.hook.secret.get_secret_value())
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, mask_url(url) if secret == url else "***")
        return text

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def describe(self) -> str:
        return f"{self.name} ({self.hook.format}, {mask_url(self.hook.url.get_secret_value())})"
