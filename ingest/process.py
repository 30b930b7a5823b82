"""`greenmon ingest` as a child process, watched through its /metrics endpoint.

Owns starting an ingestor for one database and registry (benchmarks and `greenmon demo` use
it), waiting until it is connected, reading its written counter, its CPU time and peak
memory, and stopping it with SIGTERM (it then flushes, acknowledges and prints its summary).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from greenmon.deploy.local import LocalServices, free_port
from greenmon.ingest.errors import IngestError


class IngestProcessError(IngestError):
    """The child ingestor did not start, connect or keep up."""


class IngestorProcess:
    """`greenmon ingest` as a child process, with its /metrics endpoint read for progress."""

    def __init__(
        self,
        services: LocalServices,
        registry: Path,
        database: str,
        client_id: str,
        workdir: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{client_id}.log"
        self.log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "greenmon.cli", "ingest"),
                *("--mqtt-url", services.mqtt_url, "--influx-url", services.influx_url),
                *("--database", database, "--registry", str(registry)),
                *("--runtime-dir", str(workdir / "ingest-run"), "--client-id", client_id),
                *("--metrics-port", str(self.metrics_port), "--json"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.http = httpx.Client(timeout=5)

    _WRITTEN = re.compile(rb"^greenmon_ingest_readings_written_total ([0-9.e+]+)$", re.M)
    _LAST_WRITE = re.compile(rb"^greenmon_ingest_last_write_timestamp_seconds ([0-9.e+]+)$", re.M)
    _CONNECTED = re.compile(rb"^greenmon_ingest_mqtt_connected ([0-9.e+]+)$", re.M)

    def _metric(self, pattern: re.Pattern[bytes]) -> float | None:
        try:
            body = self.http.get(f"http://127.0.0.1:{self.metrics_port}/metrics").content
        except httpx.HTTPError:
            return None
        m = pattern.search(body)
        return float(m.group(1)) if m else None

    def written(self) -> int:
        return int(self._metric(self._WRITTEN) or 0)

    def wait_connected(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise IngestProcessError(f"greenmon ingest exited early; see {self.log.name}")
            if self._metric(self._CONNECTED) == 1:
                return
            time.sleep(0.05)
        raise IngestProcessError(
            f"greenmon ingest did not connect in {timeout} s; see {self.log.name}"
        )

    def wait_written(self, target: int, timeout: float, poll_s: float) -> float:
        """Block until `target` readings are written; returns the Unix time at which InfluxDB
        accepted the write that got there. That is the ingestor's own last-write gauge, so it
        does not depend on `poll_s` (a poll sees the count up to `poll_s` late); if later
        writes followed, it is theirs (later, never earlier)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.written() >= target:
                last = self._metric(self._LAST_WRITE)
                if last is None:
                    raise IngestProcessError("the ingestor's /metrics has no last-write time")
                return last
            if self.proc.poll() is not None:
                raise IngestProcessError(f"greenmon ingest exited; see {self.log.name}")
            time.sleep(poll_s)
        raise IngestProcessError(
            f"greenmon wrote {self.written()} of {target} readings in {timeout} s; "
            f"see {self.log.name}"
        )

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the ingestor for the block (it uses no CPU meanwhile), then SIGCONT."""
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def cpu_seconds(self) -> float:
        """User + system CPU time the ingestor has used so far."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except FileNotFoundError:
            return 0.0
        m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        return int(m.group(1)) / 1024 if m else 0.0

    def stop(self) -> dict[str, Any]:
        """SIGTERM; the ingestor's own JSON summary (empty if it printed none)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.http.close()
        self.log.close()
        text = self.log_path.read_text(errors="replace")
        start = text.rfind("\n{\n") if not text.startswith("{") else -1
        with contextlib.suppress(ValueError):
            return dict(json.loads(text[start + 1 :]))
        return {}
