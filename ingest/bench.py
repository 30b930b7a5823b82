"""`greenmon bench ingest`: the ingest path measured against this machine's own limits.

Owns one benchmark run, all in a scratch directory with its own Mosquitto and influxd on free
loopback ports (nothing of the user's is touched), in this order:

1. **Broker limit** — ``mosquitto_pub -l`` (C client, QoS 1) to ``mosquitto_sub`` (C client,
   QoS 1, MQTT 5), the same payloads greenmon gets; for gateway-style (50 readings per message)
   and single-reading messages.
2. **greenmon end to end** — the real ``greenmon ingest`` process, the same ``mosquitto_pub``
   feeding it: from the first publish until InfluxDB accepted the last reading (InfluxDB 1.x
   answers a write only once the points are queryable; the time is the ingestor's own
   last-write gauge), then checked with a ``count()`` query.
3. **InfluxDB limit** — the exact line protocol greenmon writes for the run's readings,
   pre-built, POSTed in batches of the ingestor's ``batch_lines`` by as many concurrent
   connections as the ingestor's ``max_inflight_writes`` (the ingestor is paused meanwhile).

Throughput is measured in ``rounds`` rounds (new points each round); in the gateway-style mode
each round measures the InfluxDB limit just before greenmon, so the two are paired in time.
Every measurement starts on a quiet machine (`wait_quiet`: dirty pages flushed, influxd done
with the previous measurement's compactions and garbage), so none pays for the one before.
The figures printed are medians over the rounds, and the share of the limit is the median of
the rounds' paired ratios (every round's figures are in ``--json``): these machines are shared
and one round can be off by a tenth either way.
4. **Latency at half load** — publishing paced at half the measured end-to-end rate; the
   latency of each message is the time from writing it to the publisher until the ingestor's
   written counter covers it (messages are batched in order, so the counter is a FIFO clock;
   sampled every ``latency_poll_s``). p50 / p99 are printed.
5. **Naive bridge** — a paho callback that makes one HTTP write per message (the baseline
   every hand-rolled bridge starts as), on a smaller sample.

Peak RSS is the ingestor's ``VmHWM`` after the run. Every figure is from this run, on this
machine; the targets in the issue are ratios or absolute numbers printed beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from greenmon.config import IngestSettings, load_settings
from greenmon.deploy.local import LocalServices, find_binary
from greenmon.errors import GreenmonError
from greenmon.influx import InfluxClient
from greenmon.ingest.codec import encode_batch, encode_single, topic_for
from greenmon.ingest.process import IngestorProcess
from greenmon.lineprotocol import escape_tag
from greenmon.retention import policies_of

ENTERPRISE = "EB001"
GATEWAY = "gw-bench"
CARRIER = "electricity"
TOPIC = topic_for(ENTERPRISE, GATEWAY)

Progress = Callable[[str], None]


class BenchError(GreenmonError):
    """The benchmark could not run (a tool missing, a service not answering, a count wrong)."""


@dataclass(frozen=True)
class BenchConfig:
    readings: int = 1_000_000
    meters: int = 1_000
    per_message: tuple[int, ...] = (50, 1)
    # The limit is measured with the ingestor's own batch size and write concurrency.
    batch_lines: int = IngestSettings.model_fields["batch_lines"].default
    writers: int = IngestSettings.model_fields["max_inflight_writes"].default
    latency_s: float = 10.0
    poll_s: float = 0.2
    latency_poll_s: float = 0.05
    naive_readings: int = 20_000
    publisher_inflight: int = 100
    rounds: int = 3
    keep_dir: Path | None = None


@dataclass
class ModeResult:
    per_message: int
    messages: int
    readings: int
    broker_limit_rounds: list[float] = field(default_factory=list)
    greenmon_rounds: list[float] = field(default_factory=list)
    #: each round's greenmon rate over the lower of that round's two limits
    ratio_rounds: list[float] = field(default_factory=list)
    greenmon_peak_rss_mb: float = 0.0
    naive_rps: float = 0.0
    latency_rate_rps: float = 0.0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    latency_max_s: float = 0.0
    cpu_us_per_reading: float = 0.0
    stored_exact: bool = False

    @property
    def broker_limit_rps(self) -> float:
        return _median(self.broker_limit_rounds)

    @property
    def greenmon_rps(self) -> float:
        return _median(self.greenmon_rounds)

    @property
    def ratio_to_lower_limit(self) -> float:
        return _median(self.ratio_rounds)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@dataclass
class BenchReport:
    config: BenchConfig
    influx_limit_rounds: list[float] = field(default_factory=list)
    modes: list[ModeResult] = field(default_factory=list)

    @property
    def influx_limit_rps(self) -> float:
        return _median(self.influx_limit_rounds)

    def checks(self) -> list[tuple[str, float, str, bool]]:
        """(what, measured, target, met) for every target of the issue this run measured."""
        out: list[tuple[str, float, str, bool]] = []
        for m in self.modes:
            tag = f"{m.per_message}/msg"
            if m.per_message > 1 and m.ratio_rounds:
                ratio = m.ratio_to_lower_limit
                want = TARGETS["ratio_to_lower_limit_50"]
                out.append((f"{tag}: share of the lower limit", ratio, f">= {want}", ratio >= want))
            if m.per_message == 1:
                want = TARGETS["readings_per_s_1"]
                out.append(
                    (f"{tag}: readings/s", m.greenmon_rps, f">= {want:,}", m.greenmon_rps >= want)
                )
            if m.naive_rps:
                ratio = m.greenmon_rps / m.naive_rps
                want = TARGETS["ratio_to_naive"]
                out.append((f"{tag}: x naive bridge", ratio, f">= {want}", ratio >= want))
            want = TARGETS["peak_rss_mb"]
            rss = m.greenmon_peak_rss_mb
            out.append((f"{tag}: peak RSS MB", rss, f"<= {want}", 0 < rss <= want))
            want = TARGETS["latency_p99_s"]
            p99 = m.latency_p99_s
            out.append((f"{tag}: p99 latency s (half load)", p99, f"<= {want}", p99 <= want))
            out.append(
                (f"{tag}: every reading stored", float(m.stored_exact), "exact", m.stored_exact)
            )
        return out

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "influx_limit_readings_per_s": round(self.influx_limit_rps),
            "influx_limit_rounds": [round(x) for x in self.influx_limit_rounds],
            "modes": [],
            "checks": [
                {"check": c, "measured": round(v, 3), "target": t, "met": ok}
                for c, v, t, ok in self.checks()
            ],
        }
        for m in self.modes:
            lower = min(self.influx_limit_rps, m.broker_limit_rps)
            out["modes"].append(
                {
                    "readings_per_message": m.per_message,
                    "messages": m.messages,
                    "readings": m.readings,
                    "broker_limit_readings_per_s": round(m.broker_limit_rps),
                    "lower_limit_readings_per_s": round(lower),
                    "greenmon_readings_per_s": round(m.greenmon_rps),
                    "ratio_to_lower_limit": round(m.ratio_to_lower_limit, 3)
                    if m.ratio_rounds
                    else None,
                    "naive_bridge_readings_per_s": round(m.naive_rps),
                    "ratio_to_naive": round(m.greenmon_rps / m.naive_rps, 1)
                    if m.naive_rps
                    else None,
                    "latency_load_readings_per_s": round(m.latency_rate_rps),
                    "latency_p50_s": round(m.latency_p50_s, 3),
                    "latency_p99_s": round(m.latency_p99_s, 3),
                    "latency_max_s": round(m.latency_max_s, 3),
                    "peak_rss_mb": round(m.greenmon_peak_rss_mb, 1),
                    "ingestor_cpu_us_per_reading": round(m.cpu_us_per_reading, 1),
                    "stored_exact": m.stored_exact,
                    "rounds": {
                        "broker_limit_readings_per_s": [round(x) for x in m.broker_limit_rounds],
                        "greenmon_readings_per_s": [round(x) for x in m.greenmon_rounds],
                        "ratio_to_lower_limit": [round(x, 3) for x in m.ratio_rounds],
                    },
                }
            )
        return out


#: The issue's targets on a 2-core machine, checked against this run's figures.
TARGETS = {
    "ratio_to_lower_limit_50": 0.60,  # gateway-style messages, of the lower of the two limits
    "readings_per_s_1": 20_000,  # one reading per message
    "ratio_to_naive": 10.0,
    "peak_rss_mb": 250.0,
    "latency_p99_s": 2.0,
}


# --------------------------------------------------------------------------- workload


def meter_id(i: int) -> str:
    return f"{ENTERPRISE}-M{i:05d}"


def write_registry(root: Path, meters: int) -> Path:
    """A registry with one enterprise and `meters` electricity registers."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "enterprises.csv").write_text(
        "enterprise_id,name,county,industry,land_area_mu,annual_quota_tce,"
        "intensity_target_tce_per_10k_yuan\n"
        f"{ENTERPRISE},bench,崇川区,C3731,100,1000,0.1\n",
        encoding="utf-8",
    )
    rows = "".join(
        f"{meter_id(i)},{ENTERPRISE},{CARRIER},kWh,register,1,99999999,boundary,false\n"
        for i in range(meters)
    )
    (root / "meters.csv").write_text(
        "meter_id,enterprise_id,carrier,unit,kind,multiplier,rollover,role,raw_material\n" + rows,
        encoding="utf-8",
    )
    (root / "monthly.csv").write_text(
        "enterprise_id,month,output_value_10k_yuan,value_added_10k_yuan,sales_10k_yuan,"
        "tax_10k_yuan,product_output,product_unit\n",
        encoding="utf-8",
    )
    return root


@dataclass(frozen=True)
class Workload:
    """`readings` readings in messages of `per_message`; reading r is meter r % meters at
    base + (r // meters) seconds, so every (meter, time) is distinct and a message of a
    gateway-style batch shares one timestamp."""

    readings: int
    per_message: int
    meters: int
    base_ms: int

    @property
    def messages(self) -> int:
        return self.readings // self.per_message

    def _reading(self, r: int) -> tuple[str, float, int]:
        return meter_id(r % self.meters), float(r) + 0.5, self.base_ms + (r // self.meters) * 1000

    def payloads(self) -> Iterator[bytes]:
        k = self.per_message
        for m in range(self.messages):
            if k == 1:
                meter, value, ts = self._reading(m)
                yield encode_single(meter, value, ts, unit="kWh")
                continue
            first = m * k
            ts = self._reading(first)[2]
            readings = []
            for r in range(first, first + k):
                meter, value, r_ts = self._reading(r)
                reading: dict[str, Any] = {"meter": meter, "value": value, "unit": "kWh"}
                if r_ts != ts:
                    reading["ts"] = r_ts
                readings.append(reading)
            yield encode_batch(GATEWAY, ts, readings)

    def lines(self) -> Iterator[str]:
        prefix = f"meter_reading,carrier={CARRIER},enterprise={escape_tag(ENTERPRISE)},meter="
        for r in range(self.messages * self.per_message):
            meter, value, ts = self._reading(r)
            yield f"{prefix}{escape_tag(meter)} value={value!r} {ts * 1_000_000}"


def write_payload_file(path: Path, payloads: Iterator[bytes]) -> int:
    n = 0
    with path.open("wb") as fh:
        for p in payloads:
            if b"\n" in p:
                raise BenchError("payload contains a newline (mosquitto_pub -l sends lines)")
            fh.write(p + b"\n")
            n += 1
    return n


# --------------------------------------------------------------------------- limits


def influx_limit(influx_url: str, database: str, lines: list[str], cfg: BenchConfig) -> float:
    """Readings/s InfluxDB accepts for pre-built line protocol, `writers` POSTs at a time."""
    client = InfluxClient(influx_url, database, max_retries=0, batch_lines=cfg.batch_lines)
    try:
        client.drop_database()
        client.ensure_database()
        bodies = [
            "\n".join(lines[i : i + cfg.batch_lines]).encode()
            for i in range(0, len(lines), cfg.batch_lines)
        ]
        url = f"{influx_url}/write"
        params = {"db": database, "precision": "ns"}

        def post(body: bytes, http: httpx.Client) -> None:
            resp = http.post(url, params=params, content=body)
            if resp.status_code != 204:
                raise BenchError(f"InfluxDB refused a bulk write: {resp.status_code} {resp.text}")

        clients = [httpx.Client(timeout=120) for _ in range(cfg.writers)]
        try:
            start = time.perf_counter()
            with ThreadPoolExecutor(cfg.writers) as pool:
                futures = [
                    pool.submit(post, body, clients[i % cfg.writers])
                    for i, body in enumerate(bodies)
                ]
                for f in futures:
                    f.result()
            elapsed = time.perf_counter() - start
        finally:
            for c in clients:
                c.close()
        stored = _count(client)
        if stored != len(lines):
            raise BenchError(f"InfluxDB limit run stored {stored} of {len(lines)} points")
        client.drop_database()
        return len(lines) / elapsed
    finally:
        client.close()


def _count(client: InfluxClient) -> int:
    df = client.query(f"SELECT count(value) FROM {client.source('meter_reading')}")
    return int(df.get_column("count")[0]) if df.height else 0


def _publisher(port: int, cfg: BenchConfig, client_id: str) -> list[str]:
    return [
        find_binary("mosquitto_pub"),
        *("-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-q", "1", "-l"),
        *("-M", str(cfg.publisher_inflight), "-i", client_id, "--quiet"),
    ]


class Publisher:
    """``mosquitto_pub -l`` fed from a file. Its stdin stays open until the caller has seen
    every message arrive: mosquitto_pub 2.0 exits at end of input without sending what it
    still has queued, so closing early would lose messages."""

    #: time for the started client to connect before it is fed (its start-up is not the
    #: subject of any measurement; were it slower, it would only count against the result)
    CONNECT_S = 0.5

    def __init__(self, command: list[str], payload_file: Path) -> None:
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE)
        time.sleep(self.CONNECT_S)
        if self.proc.poll() is not None:
            raise BenchError(f"mosquitto_pub exited at start ({self.proc.returncode})")
        self._feeder = threading.Thread(target=self._feed, args=(payload_file,), daemon=True)

    def start(self) -> float:
        """Start feeding the payloads; returns the Unix time it started."""
        started = time.time()
        self._feeder.start()
        return started

    def _feed(self, payload_file: Path) -> None:
        assert self.proc.stdin is not None
        with payload_file.open("rb") as fh, contextlib.suppress(BrokenPipeError):
            shutil.copyfileobj(fh, self.proc.stdin, 1 << 20)
            self.proc.stdin.flush()

    def close(self) -> None:
        if self._feeder.ident is not None:
            self._feeder.join(timeout=60)
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def broker_limit(
    port: int, payload_file: Path, messages: int, per_message: int, cfg: BenchConfig
) -> float:
    """Readings/s through the broker between the C clients, QoS 1 both ways.

    The subscriber's persistent session is created first (``-E`` exits once subscribed), so
    the timed subscriber receives every message even if it connects after the first publish.
    """
    sub_cmd = [
        find_binary("mosquitto_sub"),
        *("-h", "127.0.0.1", "-p", str(port), "-t", TOPIC, "-q", "1", "-V", "mqttv5"),
        *("-c", "-x", "600", "-i", f"bench-limit-sub-{per_message}"),
    ]
    subprocess.run([*sub_cmd, "-E"], check=True, timeout=30, stdout=subprocess.DEVNULL)
    sub = subprocess.Popen(
        [*sub_cmd, "-C", str(messages), "-F", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        pub = Publisher(_publisher(port, cfg, "bench-limit-pub"), payload_file)
        start = pub.start()
        try:
            _, err = sub.communicate(timeout=300)
        except subprocess.TimeoutExpired as exc:
            raise BenchError("mosquitto_sub did not receive every message in 300 s") from exc
        finally:
            elapsed = time.time() - start
            pub.close()
        if sub.returncode:
            raise BenchError(f"mosquitto_sub failed: {err.decode(errors='replace')}")
        return messages * per_message / elapsed
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
        forget_session(port, f"bench-limit-sub-{per_message}")


def forget_session(port: int, client_id: str) -> None:
    """End the persistent session `client_id` left at the broker, so that it stops queueing
    every later message (which would cost the broker CPU in later measurements): connecting
    with a clean start discards it, and the new one ends at disconnect."""
    subprocess.run(
        [
            find_binary("mosquitto_sub"),
            *("-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-i", client_id),
            *("-t", "greenmon/bench/none", "-E"),
        ],
        check=True,
        timeout=30,
        stdout=subprocess.DEVNULL,
    )


# --------------------------------------------------------------------------- greenmon


def _warm_up(services: LocalServices, ingestor: IngestorProcess, cfg: BenchConfig) -> None:
    """One reading through the whole path: the subscription is in place, the database exists."""
    payload = encode_single(meter_id(0), 0.0, int(time.time() * 1000) - 86_400_000, unit="kWh")
    subprocess.run(
        [
            find_binary("mosquitto_pub"),
            *("-h", "127.0.0.1", "-p", str(_port(services.mqtt_url)), "-t", TOPIC, "-q", "1"),
            "-m",
            payload.decode(),
        ],
        check=True,
    )
    ingestor.wait_written(1, timeout=30, poll_s=cfg.poll_s)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def greenmon_rate(
    services: LocalServices,
    ingestor: IngestorProcess,
    payload_file: Path,
    readings: int,
    cfg: BenchConfig,
    client_id: str,
) -> float:
    """Readings/s from the first publish to InfluxDB accepting the last reading (Unix times,
    both on this machine)."""
    already = ingestor.written()
    pub = Publisher(_publisher(_port(services.mqtt_url), cfg, client_id), payload_file)
    start = pub.start()
    try:
        end = ingestor.wait_written(already + readings, timeout=600, poll_s=cfg.poll_s)
    finally:
        pub.close()
    return readings / (end - start)


def latency_run(
    services: LocalServices,
    ingestor: IngestorProcess,
    workload: Workload,
    rate_rps: float,
    cfg: BenchConfig,
) -> tuple[float, float, float]:
    """Publish at `rate_rps` readings/s for about `latency_s`; p50, p99, max latency (s)."""
    payloads = list(workload.payloads())
    msg_rate = rate_rps / workload.per_message
    count = min(len(payloads), max(1, int(msg_rate * cfg.latency_s)))
    payloads = payloads[:count]
    already = ingestor.written()
    pub = subprocess.Popen(
        _publisher(_port(services.mqtt_url), cfg, "bench-latency-pub"), stdin=subprocess.PIPE
    )
    assert pub.stdin is not None
    sent_at: list[float] = [0.0] * count
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), ingestor.written() - already))
            time.sleep(cfg.latency_poll_s)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    start = time.perf_counter()
    tick = 0.01
    i = 0
    try:
        while i < count:
            due = int((time.perf_counter() - start) * msg_rate) + 1
            if due > i:
                chunk = payloads[i:due]
                now = time.perf_counter()
                pub.stdin.write(b"".join(p + b"\n" for p in chunk))
                pub.stdin.flush()
                for j in range(i, min(due, count)):
                    sent_at[j] = now
                i = min(due, count)
            time.sleep(tick)
        ingestor.wait_written(already + count * workload.per_message, timeout=120, poll_s=0.01)
        samples.append((time.perf_counter(), ingestor.written() - already))
    finally:
        stop.set()
        poller.join()
        with contextlib.suppress(BrokenPipeError):
            pub.stdin.close()
        try:
            pub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pub.kill()
            pub.wait()
    # FIFO clock: message j is queryable once (j + 1) * per_message readings are written.
    latencies: list[float] = []
    k = 0
    for j in range(count):
        need = (j + 1) * workload.per_message
        while k < len(samples) and samples[k][1] < need:
            k += 1
        if k == len(samples):
            raise BenchError("latency run: the written counter never covered every message")
        latencies.append(max(0.0, samples[k][0] - sent_at[j]))
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return pct(0.50), pct(0.99), latencies[-1]


# --------------------------------------------------------------------------- naive bridge


def naive_bridge_main(argv: Sequence[str]) -> None:
    """The baseline: paho's callback makes one HTTP write per message, acks on return."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    port, influx_url, database, expected = argv[0], argv[1], argv[2], int(argv[3])
    http = httpx.Client(timeout=30)
    done = threading.Event()
    seen = [0]

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        enterprise = msg.topic.split("/")[2]
        items = doc.get("readings", [doc])
        lines = []
        for r in items:
            ts = r.get("ts", doc.get("ts"))
            lines.append(
                f"meter_reading,carrier={CARRIER},enterprise={enterprise},meter={r['meter']} "
                f"value={float(r['value'])} {int(ts) * 1_000_000}"
            )
        http.post(f"{influx_url}/write", params={"db": database}, content="\n".join(lines).encode())
        seen[0] += len(lines)
        if seen[0] >= expected:
            done.set()

    def on_subscribe(client: paho.Client, *args: Any) -> None:
        print("ready", flush=True)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive")
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *a: c.subscribe("greenmon/v1/+/+/readings", qos=1)
    client.connect("127.0.0.1", int(port))
    client.loop_start()
    done.wait(600)
    client.loop_stop()
    print(json.dumps({"readings": seen[0]}), flush=True)


def naive_rate(
    services: LocalServices, workdir: Path, workload: Workload, cfg: BenchConfig
) -> float:
    database = f"bench_naive_{workload.per_message}"
    client = InfluxClient(services.influx_url, database)
    client.drop_database()
    client.ensure_database()
    payload_file = workdir / f"naive-{workload.per_message}.txt"
    messages = write_payload_file(payload_file, workload.payloads())
    readings = messages * workload.per_message
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "greenmon.ingest.bench", "naive"),
            str(_port(services.mqtt_url)),
            services.influx_url,
            database,
            str(readings),
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        if not ready or proc.stdout.readline().strip() != b"ready":
            raise BenchError("the naive bridge did not subscribe")
        pub = Publisher(_publisher(_port(services.mqtt_url), cfg, "bench-naive-pub"), payload_file)
        start = pub.start()
        try:
            proc.wait(timeout=600)
        finally:
            elapsed = time.time() - start
            pub.close()
        stored = _count(client)
        if stored != readings:
            raise BenchError(f"the naive bridge stored {stored} of {readings} readings")
        return readings / elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        client.drop_database()
        client.close()


# --------------------------------------------------------------------------- the run


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of this machine so far, from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def wait_quiet(max_busy: float = 0.10, window_s: float = 0.25, timeout_s: float = 15.0) -> float:
    """Flush dirty pages, then wait until the machine is idle (at most `max_busy` over a
    `window_s` window, e.g. influxd done compacting or collecting garbage after the previous
    measurement), so that no measurement pays for the one before it. Gives up after
    `timeout_s` (a shared machine may never be idle); returns the last busy share seen."""
    os.sync()
    deadline = time.monotonic() + timeout_s
    busy = 1.0
    while time.monotonic() < deadline:
        b0, t0 = _cpu_ticks()
        time.sleep(window_s)
        b1, t1 = _cpu_ticks()
        busy = (b1 - b0) / max(1, t1 - t0)
        if busy <= max_busy:
            break
    return busy


def _round_file(scratch: Path, wl: Workload, r: int) -> Path:
    path = scratch / f"payloads-{wl.per_message}-{r}.txt"
    write_payload_file(path, wl.payloads())
    return path


def _shifted(wl: Workload, by: int) -> Workload:
    """The same workload `by` spans later: all new points, none overwritten."""
    span_ms = (wl.readings // wl.meters + 1) * 1000
    return Workload(wl.readings, wl.per_message, wl.meters, wl.base_ms + by * span_ms)


def run_bench(cfg: BenchConfig, progress: Progress = lambda _msg: None) -> BenchReport:
    find_binary("mosquitto")
    find_binary("influxd")
    find_binary("mosquitto_pub")
    find_binary("mosquitto_sub")
    report = BenchReport(cfg)
    scratch = cfg.keep_dir or Path(tempfile.mkdtemp(prefix="greenmon-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    services = LocalServices(scratch / "run")
    rounds = range(cfg.rounds)
    try:
        progress("starting Mosquitto and influxd on free loopback ports")
        services.up()
        registry = write_registry(scratch / "registry", cfg.meters)
        base_ms = (int(time.time()) - 30 * 86_400) * 1000
        workloads = [
            Workload(cfg.readings - cfg.readings % k, k, cfg.meters, base_ms + i * 86_400_000)
            for i, k in enumerate(cfg.per_message)
        ]
        limit_lines = list(workloads[0].lines())
        for m, wl in enumerate(workloads):
            mode = ModeResult(wl.per_message, wl.messages, wl.readings)
            report.modes.append(mode)
            tag = f"{wl.per_message}/msg"
            progress(f"{tag}: writing {cfg.rounds} rounds of {wl.messages:,} payloads")
            files = [_round_file(scratch, _shifted(wl, r), r) for r in rounds]
            for r in rounds:
                progress(f"{tag}: broker limit (mosquitto_pub -> mosquitto_sub), round {r + 1}")
                wait_quiet()
                mode.broker_limit_rounds.append(
                    broker_limit(
                        _port(services.mqtt_url), files[r], wl.messages, wl.per_message, cfg
                    )
                )
            database = f"bench_greenmon_{wl.per_message}"
            # Where the ingestor child writes raw readings: the retention layout it reads from
            # the same environment.
            dbc = InfluxClient(services.influx_url, database, policies=policies_of(load_settings()))
            dbc.drop_database()
            client_id = f"bench-ingest-{wl.per_message}"
            ingestor = IngestorProcess(services, registry, database, client_id, scratch)
            try:
                ingestor.wait_connected()
                _warm_up(services, ingestor, cfg)
                cpu = 0.0
                for r in rounds:
                    if m == 0:
                        progress(
                            f"InfluxDB limit: {len(limit_lines):,} pre-built lines, "
                            f"{cfg.writers} writers, round {r + 1} (ingestor paused)"
                        )
                        with ingestor.paused():
                            wait_quiet()
                            report.influx_limit_rounds.append(
                                influx_limit(services.influx_url, "bench_limit", limit_lines, cfg)
                            )
                    progress(f"{tag}: greenmon end to end, {wl.readings:,} readings, round {r + 1}")
                    wait_quiet()
                    cpu0 = ingestor.cpu_seconds()
                    rate = greenmon_rate(
                        services, ingestor, files[r], wl.readings, cfg, f"bench-pub-{tag}"
                    )
                    cpu += ingestor.cpu_seconds() - cpu0
                    mode.greenmon_rounds.append(rate)
                    limit = report.influx_limit_rounds[r] if m == 0 else report.influx_limit_rps
                    mode.ratio_rounds.append(rate / min(limit, mode.broker_limit_rps))
                    files[r].unlink()
                mode.cpu_us_per_reading = cpu * 1e6 / (wl.readings * cfg.rounds)
                # + the warm-up reading
                mode.stored_exact = _count(dbc) == wl.readings * cfg.rounds + 1
                half = mode.greenmon_rps / 2
                progress(f"{tag}: latency at half load ({half:,.0f} readings/s)")
                mode.latency_rate_rps = half
                mode.latency_p50_s, mode.latency_p99_s, mode.latency_max_s = latency_run(
                    services, ingestor, _shifted(wl, cfg.rounds), half, cfg
                )
                mode.greenmon_peak_rss_mb = ingestor.peak_rss_mb()
            finally:
                ingestor.stop()
                forget_session(_port(services.mqtt_url), client_id)
                dbc.drop_database()
                dbc.close()
            progress(f"{tag}: naive bridge (one HTTP write per message)")
            naive_wl = Workload(
                max(wl.per_message, cfg.naive_readings - cfg.naive_readings % wl.per_message),
                wl.per_message,
                wl.meters,
                wl.base_ms,
            )
            mode.naive_rps = naive_rate(services, scratch, naive_wl, cfg)
        return report
    finally:
        services.down()
        if cfg.keep_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["naive"]:
        naive_bridge_main(sys.argv[2:])
