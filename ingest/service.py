"""Assembles one ingestor: registry, spool, dead letters, metrics, pipeline, MQTT consumer.

`Ingestor.run(stop)` blocks until `stop` is set (the CLI sets it on SIGTERM/SIGINT), then
finishes in-flight batches, acknowledges them and returns. Misconfiguration fails here, at
start-up, with a message naming the key; bad input never does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

from greenmon.config import Settings
from greenmon.errors import ConfigError
from greenmon.influx import InfluxClient, InfluxError
from greenmon.ingest.codec import DecodeLimits
from greenmon.ingest.deadletter import DeadLetterSink
from greenmon.ingest.metrics import IngestMetrics
from greenmon.ingest.mqtt import MqttConsumer
from greenmon.ingest.pipeline import Pipeline
from greenmon.ingest.spool import Spool
from greenmon.registry import Registry
from greenmon.registry_watch import RegistryWatcher
from greenmon.retention import ensure_quietly, raw_max_age_s

log = logging.getLogger("greenmon.ingest")


def ingest_paths(settings: Settings) -> tuple[Path, Path]:
    base = settings.runtime_dir / "ingest" / settings.ingest.client_id
    spool = settings.ingest.spool_dir or base / "spool"
    dead = settings.ingest.dead_letter_file or base / "dead_letters.jsonl"
    return spool, dead


class Ingestor:
    """`registry` is fixed, or a `RegistryWatcher` whose reloads the ingestor follows (it
    starts and closes the watcher's thread with its own run)."""

    def __init__(self, settings: Settings, registry: Registry | RegistryWatcher) -> None:
        if settings.mqtt_url is None or settings.influx_url is None:
            raise ConfigError("mqtt_url and influx_url must be set for ingest")
        self.settings = settings
        self.watcher = registry if isinstance(registry, RegistryWatcher) else None
        if isinstance(registry, RegistryWatcher):
            registry = registry.current
        ing = settings.ingest
        spool_dir, dead_file = ingest_paths(settings)
        self.metrics = IngestMetrics()
        if ing.metrics_port:
            try:
                self.metrics.serve(ing.metrics_port, ing.metrics_host)
            except OSError as exc:
                raise ConfigError(
                    f"ingest.metrics_port: cannot listen on {ing.metrics_host}:{ing.metrics_port} "
                    f"({exc}); choose another or 0 to disable"
                ) from exc
        # Short retries on the hot path: if InfluxDB does not answer quickly, the batch goes
        # to the spool and the replay thread keeps trying.
        self.client = InfluxClient.from_settings(settings, max_retries=2, backoff_cap=0.5)
        # The database and its retention policies (the raw readings' one must exist before
        # anything is written into it); differences from the settings are only logged.
        ensure_quietly(self.client, settings)
        self.spool = Spool(spool_dir, max_bytes=ing.spool_max_bytes)
        if self.spool.depth_records:
            log.warning(
                "spool holds %d records from an earlier run: replaying", self.spool.depth_records
            )
        self.dead_letters = DeadLetterSink(dead_file, max_bytes=ing.dead_letter_max_bytes)
        self.consumer = MqttConsumer(settings, self._on_message)
        self.consumer.on_state = lambda up: self.metrics.connected.set(1 if up else 0)
        self.pipeline = Pipeline(
            registry,
            self.client,
            self.spool,
            self.dead_letters,
            self.metrics,
            self.consumer.ack,
            limits=DecodeLimits(
                topic_prefix=settings.mqtt_topic_prefix,
                max_payload_bytes=ing.max_payload_bytes,
                max_readings=ing.max_readings_per_message,
                max_future_skew_s=ing.max_future_skew_s,
                max_age_s=raw_max_age_s(settings),
            ),
            batch_lines=ing.batch_lines,
            batch_age_s=ing.batch_age_ms / 1000,
            max_inflight_writes=ing.max_inflight_writes,
        )
        self._last_stats = time.monotonic()
        self.metrics.registry_meters.set(registry.meters.height)
        if self.watcher is not None:
            self.watcher.subscribe(self._registry_changed)
            self.watcher.on_result(
                lambda result: self.metrics.registry_reloads.labels(result.outcome).inc()
            )

    def _registry_changed(self, registry: Registry) -> None:
        self.pipeline.set_registry(registry)
        self.metrics.registry_meters.set(registry.meters.height)

    def _on_message(self, topic: str, payload: bytes, token: object) -> None:
        self.pipeline.handle(topic, payload, token)

    def _tick(self) -> None:
        self.pipeline.tick()
        now = time.monotonic()
        if now - self._last_stats >= self.settings.ingest.stats_interval_s:
            self._last_stats = now
            threading.Thread(target=self._write_stats, daemon=True).start()

    def _write_stats(self) -> None:
        # Self-monitoring is best effort; the data path has its own spool.
        with contextlib.suppress(InfluxError):
            self.client.write_batch(
                [self.metrics.stats_line(self.settings.ingest.client_id, time.time_ns())]
            )

    def run(self, stop: threading.Event) -> None:
        if self.watcher is not None:
            self.watcher.start()
        try:
            self.consumer.run(stop, self._tick, self.pipeline.drain)
        finally:
            if self.watcher is not None:
                self.watcher.close()
            self.pipeline.close()
            self.client.close()
