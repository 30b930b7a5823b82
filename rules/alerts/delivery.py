"""Draining the outbox into the sinks: one worker per sink, retries with capped backoff.

The evaluation only appends to the durable outbox (`greenmon.rules.alerts.store`); this module
moves it out. Each sink gets its own worker thread, so a webhook that is down or slow delays
nothing but its own rows. A row is delivered once its sink confirms (InfluxDB answered 204,
the broker sent PUBACK, the robot answered ``errcode 0``); a failure counts an attempt and sets
the row's next try (exponential backoff with jitter, capped; or what a rate limit asked for);
rows of one sink go out in their order, the oldest first. Rows nobody could deliver within
``outbox_max_age_s`` are given up on, with a warning.

Two ways to run:

- `Dispatcher.deliver_once` (``alerts check``): every sink tries what is due, in parallel,
  until its rows are out or it fails once, within a time budget; what is left waits in the
  outbox for the next run. Evaluation has already finished and been committed.
- `Dispatcher.start` / `stop` (``alerts watch``): workers run until stopped, woken when an
  evaluation adds rows (`wake`), retrying on their own schedule.

Delivery is at least once: a crash between a sink's confirmation and the mark leaves a row to
be sent again (the generic webhook body carries each transition's ``id`` for receivers that
care; InfluxDB points and retained MQTT messages are idempotent anyway).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from greenmon.influx import backoff_delay
from greenmon.rules.alerts.errors import SinkError, StoreError
from greenmon.rules.alerts.sinks import Sink
from greenmon.rules.alerts.store import AlertStore

__all__ = ["Dispatcher", "SinkReport"]

log = logging.getLogger("greenmon.rules.alerts")
_BACKOFF_BASE = 1.0
_BACKOFF_CAP = 300.0


@dataclass
class SinkReport:
    """What one sink did: rows delivered in this run, rows left, the last error."""

    sink: str
    description: str
    delivered: int = 0
    pending: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "sink": self.sink,
            "description": self.description,
            "delivered": self.delivered,
            "pending": self.pending,
            "error": self.error,
        }


@dataclass
class _Worker:
    sink: Sink
    report: SinkReport
    ready: bool = False
    attempt: int = 0
    down: bool = False
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Dispatcher:
    """Moves outbox rows into `sinks` (see the module docstring)."""

    def __init__(
        self,
        store: AlertStore,
        sinks: Sequence[Sink],
        *,
        max_age_s: float = 7 * 86_400.0,
        poll_s: float = 5.0,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.workers = {s.name: _Worker(s, SinkReport(s.name, s.describe())) for s in sinks}
        self.max_age_s = max_age_s
        self.poll_s = poll_s
        self.say = say
        self._stop = threading.Event()
        self._wake = threading.Event()

    # -- one pass (alerts check) ------------------------------------------------------------
    def deliver_once(self, timeout: float) -> list[SinkReport]:
        """Each sink delivers what is due until done or its first failure, all in parallel,
        for at most `timeout` seconds; then the sinks are closed."""
        self._expire()
        threads = []
        for worker in self.workers.values():
            t = threading.Thread(
                target=self._drain, args=(worker,), daemon=True, name=f"alerts-{worker.sink.name}"
            )
            t.start()
            threads.append(t)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()  # a worker still sending stops after its current message
        for worker, t in zip(self.workers.values(), threads, strict=True):
            if t.is_alive():
                worker.report.error = worker.report.error or f"still sending after {timeout} s"
        return self.reports()

    def _drain(self, worker: _Worker) -> None:
        try:
            while not self._stop.is_set():
                if not self._attempt(worker):
                    break
        finally:
            with worker.lock:
                self._close(worker)

    # -- continuous (alerts watch) ----------------------------------------------------------
    def start(self) -> None:
        self._expire()
        for worker in self.workers.values():
            worker.thread = threading.Thread(
                target=self._run, args=(worker,), daemon=True, name=f"alerts-{worker.sink.name}"
            )
            worker.thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for worker in self.workers.values():
            if worker.thread is not None:
                worker.thread.join(timeout)

    def _run(self, worker: _Worker) -> None:
        next_expiry = time.monotonic() + 3600
        try:
            while not self._stop.is_set():
                sent = self._attempt(worker)
                if sent:
                    continue
                wait = self.poll_s
                due = self._next_due(worker)
                if due is not None:
                    wait = min(wait, max(0.05, due - time.time()))
                self._wake.wait(wait)
                self._wake.clear()
                if time.monotonic() > next_expiry:
                    self._expire()
                    next_expiry = time.monotonic() + 3600
        finally:
            with worker.lock:
                self._close(worker)

    # -- shared -----------------------------------------------------------------------------
    def _attempt(self, worker: _Worker) -> bool:
        """Send one batch if one is due; True when something was delivered."""
        sink = worker.sink
        try:
            rows = self.store.due(sink.name, time.time(), sink.batch)
        except StoreError as exc:
            log.error("alert outbox unreadable: %s", exc)
            return False
        if not rows:
            return False
        try:
            with worker.lock:
                if not worker.ready:
                    sink.setup()
                    worker.ready = True
                ids = sink.send(rows)
        except SinkError as exc:
            worker.attempt += 1
            delay = exc.retry_after or max(
                _BACKOFF_BASE, backoff_delay(worker.attempt, base=_BACKOFF_BASE, cap=_BACKOFF_CAP)
            )
            self.store.failed([r.id for r in rows], str(exc), time.time() + delay)
            worker.report.error = str(exc)
            if not worker.down:
                log.warning(
                    "%s: %s; %d row(s) wait, next try in %.0f s",
                    sink.describe(),
                    exc,
                    len(rows),
                    delay,
                )
                worker.down = True
            with worker.lock:
                self._close(worker)
            return False
        except Exception as exc:  # a sink's bug must not kill its worker silently
            log.exception("%s failed unexpectedly", sink.describe())
            self.store.failed([r.id for r in rows], repr(exc), time.time() + _BACKOFF_CAP)
            worker.report.error = repr(exc)
            with worker.lock:
                self._close(worker)
            return False
        self.store.delivered(ids)
        worker.report.delivered += len(ids)
        worker.attempt = 0
        if worker.down:
            log.warning("%s delivers again", sink.describe())
            worker.down = False
            worker.report.error = None
        return bool(ids)

    def _next_due(self, worker: _Worker) -> float | None:
        try:
            return self.store.next_try(worker.sink.name)
        except StoreError:
            return None

    def _close(self, worker: _Worker) -> None:
        if worker.ready:
            try:
                worker.sink.close()
            except Exception:  # closing a broken connection may fail too: nothing to do
                log.debug("closing %s failed", worker.sink.name, exc_info=True)
        worker.ready = False

    def _expire(self) -> None:
        try:
            gone = self.store.expire(time.time() - self.max_age_s)
        except StoreError as exc:
            log.error("alert outbox: %s", exc)
            return
        if gone:
            log.warning(
                "gave up on %d alert message(s) older than %.0f h that no sink took",
                gone,
                self.max_age_s / 3600,
            )

    def reports(self) -> list[SinkReport]:
        backlog = self.store.backlog()
        out = []
        for name, worker in self.workers.items():
            left = backlog.get(name, {})
            worker.report.pending = int(left.get("pending", 0))
            if worker.report.pending == 0:
                worker.report.error = None
            out.append(worker.report)
        return out
