"""From decoded messages to durable points, and only then acknowledgements.

Each message is turned into ``meter_reading`` lines by `fastpath.plain_readings` when it is
plain (nearly always), else by `codec.decode`, whose rejections go to the dead letters; either
way `fastpath.format_lines` writes them, and a batch is the bytes of one write.

Owns batching (by size and age), the bounded pool of concurrent InfluxDB writes
(backpressure: when every write slot is busy, `handle` blocks the network thread, so the
broker's receive-maximum stops sending), the fallback to the on-disk spool when InfluxDB is
unreachable or failing, the replay of the spool once it answers again, and the rule that a
message is acknowledged only after every reading in it is durable (written, or spooled and
fsynced) and its dead letters are fsynced.

Lifecycle: construct, `handle` / `tick` from the network thread, `drain` on shutdown, `close`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from greenmon.influx import InfluxClient, InfluxError, InfluxWriteError
from greenmon.ingest.codec import DecodeLimits, decode
from greenmon.ingest.deadletter import DeadLetterSink
from greenmon.ingest.errors import SpoolFullError
from greenmon.ingest.fastpath import MEASUREMENT, SeriesTable, format_lines, plain_readings
from greenmon.ingest.metrics import IngestMetrics
from greenmon.ingest.spool import Spool
from greenmon.registry import Registry

log = logging.getLogger("greenmon.ingest")

AckToken = Any  # opaque to the pipeline: handed back to `ack` once durable


@dataclass
class _Batch:
    chunks: list[bytes] = field(default_factory=list)  # each message's lines
    lines: int = 0
    tokens: list[AckToken] = field(default_factory=list)
    started: float = 0.0
    max_ts_ms: int = 0


class _Decoding(NamedTuple):
    """What a message is decoded against; replaced as a whole when the registry changes."""

    registry: Registry
    table: SeriesTable


class Pipeline:
    def __init__(
        self,
        registry: Registry,
        client: InfluxClient,
        spool: Spool,
        dead_letters: DeadLetterSink,
        metrics: IngestMetrics,
        ack: Callable[[AckToken], None],
        *,
        limits: DecodeLimits = DecodeLimits(),
        batch_lines: int = 5000,
        batch_age_s: float = 0.2,
        max_inflight_writes: int = 4,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._decoding = _Decoding(registry, SeriesTable(registry.meter_infos()))
        self.client = client
        self._rp = client.policy(MEASUREMENT)  # the raw readings' retention policy
        self.spool = spool
        self.dead_letters = dead_letters
        self.metrics = metrics
        self._ack = ack
        self.limits = limits
        self.batch_lines = batch_lines
        self.batch_age_s = batch_age_s
        self._clock_ms = clock_ms
        self._batch = _Batch()
        self._slots = threading.BoundedSemaphore(max_inflight_writes)
        self._max_inflight = max_inflight_writes
        self._pool = ThreadPoolExecutor(max_inflight_writes, thread_name_prefix="influx-write")
        self._influx_down = threading.Event()
        self._stop = threading.Event()
        self._replayer = threading.Thread(
            target=self._replay_loop, name="spool-replay", daemon=True
        )
        self._replayer.start()

    @property
    def registry(self) -> Registry:
        return self._decoding.registry

    def set_registry(self, registry: Registry) -> None:
        """Decode every later message against `registry` (from any thread). The lookup table
        is built first and both are swapped in one assignment: a message is decoded against
        the old registry or the new one, never a mix."""
        self._decoding = _Decoding(registry, SeriesTable(registry.meter_infos()))

    # -- network thread ------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes, token: AckToken) -> None:
        """Decode one message and add its readings to the current batch. Never raises for
        bad input: rejections go to the dead letters."""
        self.metrics.messages.inc()
        now_ms = self._clock_ms()
        b = self._batch
        if not b.tokens:
            b.started = time.monotonic()
        dec = self._decoding  # one registry for the whole message
        plain = plain_readings(topic, payload, dec.table, now_ms, self.limits)
        if plain is None:
            # Not plain: the codec checks everything and names each rejection.
            out = decode(topic, payload, dec.registry, now_ms, self.limits)
            if out.rejections:
                self.dead_letters.add(topic, payload, out.rejections)
                for rej in out.rejections:
                    self.metrics.rejected.labels(rej.reason.value).inc()
            plain = dec.table.columns(out.readings)
        n = len(plain.values)
        if n:
            b.chunks.append(format_lines(plain))
            b.lines += n
            if plain.max_ts_ms > b.max_ts_ms:
                b.max_ts_ms = plain.max_ts_ms
            self.metrics.readings.inc(n)
        b.tokens.append(token)
        if b.lines >= self.batch_lines:
            self._flush()

    def tick(self) -> None:
        """Flush the batch once it is old enough (called every loop iteration)."""
        b = self._batch
        if b.tokens and time.monotonic() - b.started >= self.batch_age_s:
            self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, _Batch()
        if not batch.tokens:
            return
        # Backpressure: wait for a free write slot; meanwhile the broker holds the rest.
        if not self._slots.acquire(blocking=False):
            self.metrics.backpressure.inc()
            self._slots.acquire()
        self.metrics.inflight.inc()
        self._pool.submit(self._write, batch)

    # -- writer threads ------------------------------------------------------------------
    def _write(self, batch: _Batch) -> None:
        try:
            self.dead_letters.flush()
            if batch.lines:
                self._make_durable(b"".join(batch.chunks), batch.lines, batch.max_ts_ms)
            for token in batch.tokens:
                self._ack(token)
        except BaseException:  # pragma: no cover - a bug: never ack, log loudly
            log.exception("write of a batch of %d lines failed; not acknowledged", batch.lines)
        finally:
            self.metrics.inflight.dec()
            self._slots.release()

    def _make_durable(self, body: bytes, lines: int, max_ts_ms: int) -> None:
        backoff = 0.1
        while True:
            if not self._influx_down.is_set():
                t0 = time.perf_counter()
                try:
                    self.client.write_body(body, lines, rp=self._rp)
                except InfluxWriteError as exc:
                    # InfluxDB refused a line for good (400): keep it as a dead letter; the
                    # other lines of the batch were written (1.x writes them, "partial write").
                    self.dead_letters.add_raw(
                        "influx_rejected", str(exc), MEASUREMENT, getattr(exc, "line", None) or ""
                    )
                    self.dead_letters.flush()
                    self.metrics.rejected.labels("influx_rejected").inc()
                    return
                except InfluxError as exc:
                    if not self._influx_down.is_set():
                        log.warning("InfluxDB unavailable (%s): spooling to disk", exc)
                    self._influx_down.set()
                else:
                    self.metrics.write_latency.observe(time.perf_counter() - t0)
                    # Before `written`: whoever sees the count sees this write's time (or later).
                    self.metrics.last_write.set_to_current_time()
                    self.metrics.written.inc(lines)
                    self.metrics.lag.set(max(0.0, time.time() - max_ts_ms / 1e3))
                    return
            try:
                self.spool.append(body)
            except SpoolFullError as exc:
                # Never drop: hold the batch (and its acks) until InfluxDB or the spool has room.
                log.error("spool full (%s): holding %d lines", exc, lines)
                self._influx_down.clear()  # try InfluxDB again on the next round
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.metrics.spooled.inc(lines)
            self._spool_gauges()
            return

    # -- replay thread -------------------------------------------------------------------
    def _replay_loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            rec = self.spool.peek()
            if rec is None:
                if self._influx_down.is_set() and self._probe():
                    log.warning("InfluxDB answers again")
                    self._influx_down.clear()
                self._stop.wait(0.2)
                continue
            try:
                self.client.write_body(rec.payload, _line_count(rec.payload), rp=self._rp)
            except InfluxWriteError as exc:
                self.dead_letters.add_raw("influx_rejected", str(exc), MEASUREMENT, "")
                self.dead_letters.flush()
            except InfluxError:
                self._influx_down.set()
                self._stop.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 5.0)
                continue
            self.spool.commit(rec)
            self.metrics.last_write.set_to_current_time()
            self.metrics.replayed.inc()
            self._spool_gauges()
            if self._influx_down.is_set():
                log.warning("InfluxDB answers again; replaying the spool")
                self._influx_down.clear()
            backoff = 0.2

    def _probe(self) -> bool:
        try:
            self.client.ping()
        except InfluxError:
            return False
        return True

    def _spool_gauges(self) -> None:
        self.metrics.spool_depth.set(self.spool.depth_records)
        self.metrics.spool_bytes.set(self.spool.depth_bytes)

    # -- lifecycle -----------------------------------------------------------------------
    def drain(self, timeout: float = 60.0) -> bool:
        """Flush the open batch and wait until every write finished (acks queued)."""
        self._flush()
        deadline = time.monotonic() + timeout
        taken = 0
        while taken < self._max_inflight and time.monotonic() < deadline:
            if self._slots.acquire(timeout=0.1):
                taken += 1
        for _ in range(taken):
            self._slots.release()
        return taken == self._max_inflight

    def spool_empty(self) -> bool:
        return self.spool.depth_records == 0

    def close(self) -> None:
        self._stop.set()
        self._replayer.join(timeout=10)
        self._pool.shutdown(wait=True)
        self.dead_letters.close()
        self.spool.close()


def _line_count(body: bytes) -> int:
    """Lines in a spooled body (older records have no newline after the last line)."""
    return body.count(b"\n") + (not body.endswith(b"\n"))


__all__ = ["MEASUREMENT", "Pipeline"]
