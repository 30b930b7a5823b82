"""Self-monitoring of the ingestor: Prometheus metrics and the `greenmon_ingest` measurement.

One `IngestMetrics` per ingestor, on its own `CollectorRegistry` (so several ingestors in one
process, as in the tests, never share counters). `serve` exposes ``/metrics``;
`stats_line` renders the periodic `greenmon_ingest` point written to InfluxDB: the counters of
`snapshot` plus ``rejected_<reason>`` per reason of `REJECT_REASONS`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from greenmon.ingest.codec import RejectReason
from greenmon.lineprotocol import format_line

#: Every reason a reading or message can be refused for: the codec's, plus InfluxDB refusing a
#: line for good. `stats_line` writes one ``rejected_<reason>`` field for each (0 included), so
#: the field set never changes and dashboards can chart rejects by reason.
REJECT_REASONS = (*(r.value for r in RejectReason), "influx_rejected")


class IngestMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "greenmon_ingest"
        self.messages = Counter(f"{p}_messages_received", "MQTT messages received", registry=r)
        self.readings = Counter(f"{p}_readings_received", "Valid readings decoded", registry=r)
        self.written = Counter(f"{p}_readings_written", "Readings written to InfluxDB", registry=r)
        self.rejected = Counter(
            f"{p}_rejected", "Readings or messages rejected, by reason", ["reason"], registry=r
        )
        self.spooled = Counter(f"{p}_readings_spooled", "Readings put in the spool", registry=r)
        self.replayed = Counter(f"{p}_spool_records_replayed", "Spool records replayed", registry=r)
        self.backpressure = Counter(
            f"{p}_backpressure_waits", "Times the network loop waited for a write slot", registry=r
        )
        self.spool_depth = Gauge(f"{p}_spool_depth_records", "Records in the spool", registry=r)
        self.spool_bytes = Gauge(f"{p}_spool_depth_bytes", "Bytes in the spool", registry=r)
        self.inflight = Gauge(f"{p}_inflight_writes", "InfluxDB writes in flight", registry=r)
        self.connected = Gauge(f"{p}_mqtt_connected", "1 while connected to the broker", registry=r)
        self.lag = Gauge(
            f"{p}_lag_seconds",
            "Wall time minus device time of the newest written reading",
            registry=r,
        )
        self.last_write = Gauge(
            f"{p}_last_write_timestamp_seconds",
            "Unix time of the latest write InfluxDB accepted",
            registry=r,
        )
        self.registry_reloads = Counter(
            f"{p}_registry_reloads",
            "Registry reloads, by outcome (applied, refused, unchanged)",
            ["outcome"],
            registry=r,
        )
        self.registry_meters = Gauge(
            f"{p}_registry_meters", "Meters in the registry in use", registry=r
        )
        self.write_latency = Histogram(
            f"{p}_write_latency_seconds",
            "InfluxDB write latency per batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def rejected_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for metric in self.rejected.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out[s.labels["reason"]] = int(s.value)
        return out

    def _sample(self, name: str) -> float:
        return self.registry.get_sample_value(f"greenmon_ingest_{name}") or 0.0

    def snapshot(self) -> dict[str, float]:
        return {
            "messages": self._sample("messages_received_total"),
            "received": self._sample("readings_received_total"),
            "written": self._sample("readings_written_total"),
            "rejected": float(sum(self.rejected_by_reason().values())),
            "spooled": self._sample("readings_spooled_total"),
            "spool_depth": self._sample("spool_depth_records"),
            "lag_s": self._sample("lag_seconds"),
        }

    def stats_line(self, client_id: str, ts_ns: int) -> str:
        snap = self.snapshot()
        fields: dict[str, float | int] = {
            k: (int(v) if k != "lag_s" else float(v)) for k, v in snap.items()
        }
        by_reason = self.rejected_by_reason()
        fields.update({f"rejected_{r}": by_reason.get(r, 0) for r in REJECT_REASONS})
        return format_line("greenmon_ingest", {"client_id": client_id}, fields, ts_ns)
