"""``greenmon bench aggregate --source influx``: ``greenmon aggregate`` against a private influxd,
beside what the database itself needs to serve the same work, measured in the same run.

The fleet is `greenmon.aggregator.bench.generate`'s (10 meters per enterprise, every fault kind
the aggregator handles), written into a private ``influxd`` started in a scratch directory as
the ingestor writes ``meter_reading``. Then, for each of ``rounds`` rounds, each measurement
starting on a quiet machine (`greenmon.ingest.bench.wait_quiet`):

- **read**: the range's readings fetched from InfluxDB as CSV, one query per local day
  (``SELECT "value" ... GROUP BY "meter"``, the query greenmon itself sends), the answers read
  to the last byte and not parsed: what the database needs to hand the readings over;
- **write**: the very points greenmon writes (captured once, before the rounds, by running the
  same computation with a client that records its request bodies) posted to a second database
  in the same requests: what the database needs to store the results;
- **greenmon**: ``greenmon aggregate --from .. --to .. --json`` as a user runs it, in its own
  process, end to end (interpreter start, registry and references, reading, computing,
  writing), with that process's own peak resident set size (``wait4``'s ``ru_maxrss``, taken
  by a small launcher process: a child forked from the benchmark would inherit its peak).

Figures are medians over the rounds; the ratio is the median of each round's greenmon time /
(read + write). Checks: greenmon within 2x read + write; a 1,000-enterprise day within 6 s; peak
RSS within 600 MB (the target for a month of the 1,000-enterprise fleet, and the same budget
for any range: memory follows ``chunk_readings``, not the length of the range).

``ranges`` (``--ranges 1,7,30``) measures that last claim: the fleet is generated and loaded
for the longest range, the rounds measure the first ``days`` as above, and then ``greenmon
aggregate`` runs once over each range from the first day (a day, a week, a month), each in its
own process, with its time and peak RSS. Checks: every range within 600 MB, and the longest
range's peak RSS within `RSS_GROWTH_LIMIT` x the shortest's (memory does not grow with the
length of the range).
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Final
from zoneinfo import ZoneInfo

import httpx
import polars as pl

from greenmon.aggregator.bench import TZ, generate
from greenmon.aggregator.service import default_options, run_range
from greenmon.aggregator.store import READINGS, to_lines
from greenmon.config import Settings
from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.ingest.bench import wait_quiet
from greenmon.retention import ensure_retention, policies_of, source_of

__all__ = ["InfluxBenchResult", "InfluxRound", "run_influx_bench"]

_FIRST_DAY: Final = datetime(2025, 1, 1, tzinfo=ZoneInfo(TZ))  # the bench fleet's first day
_DATABASE: Final = "greenmon"
_LIMIT_DATABASE: Final = "greenmon_write_limit"
_LOAD_ROWS: Final = 1_000_000
_FRAME: Final = struct.Struct("<QQ")  # body length, lines
_POLICIES: Final = policies_of(Settings())  # the default layout: raw readings in "raw"
#: The issue's targets: end to end within 2x the database's own read + write; a
#: 1,000-enterprise day within 6 s; peak RSS within 600 MB (a month of that fleet).
RATIO_LIMIT: Final = 2.0
DAY_LIMIT_S: Final = 6.0
RSS_LIMIT_MB: Final = 600.0
#: --ranges: the longest range's peak RSS at most this multiple of the shortest's.
RSS_GROWTH_LIMIT: Final = 1.2

Say = Callable[[str], None]


@dataclass
class InfluxRound:
    read_s: float
    write_s: float
    greenmon_s: float
    peak_rss_bytes: int
    phases: dict[str, float] = field(default_factory=dict)  # greenmon's own read/compute/write

    @property
    def ratio(self) -> float:
        return self.greenmon_s / (self.read_s + self.write_s)


@dataclass
class RangeRun:
    """One ``greenmon aggregate`` over the first `days` days (``--ranges``)."""

    days: int
    readings: int
    points: int
    chunks: int
    greenmon_s: float
    peak_rss_bytes: int
    load: tuple[float, float, float]


@dataclass
class InfluxBenchResult:
    meters: int
    enterprises: int
    days: int
    readings: int  # rows in the range, as InfluxDB returns them
    read_bytes: int
    points: dict[str, int]
    chunks: int
    chunk_readings: int
    rounds: list[InfluxRound]
    cores: int
    ranges: list[RangeRun] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def median(values: list[float]) -> float:
            return statistics.median(values)

        read = median([r.read_s for r in self.rounds])
        write = median([r.write_s for r in self.rounds])
        greenmon = median([r.greenmon_s for r in self.rounds])
        ratio = median([r.ratio for r in self.rounds])
        rss_mb = max(r.peak_rss_bytes for r in self.rounds) / 1e6
        written = sum(self.points.values())
        checks: dict[str, bool] = {f"greenmon_within_{RATIO_LIMIT:g}x_read_plus_write": ratio <= 2}
        if self.enterprises >= 1000 and self.days == 1:
            checks[f"1000_enterprise_day_within_{DAY_LIMIT_S:g}s"] = greenmon <= DAY_LIMIT_S
        checks[f"peak_rss_within_{RSS_LIMIT_MB:g}MB"] = rss_mb <= RSS_LIMIT_MB
        by_range = [
            {
                "days": r.days,
                "readings": r.readings,
                "points_written": r.points,
                "chunks": r.chunks,
                "greenmon_s": round(r.greenmon_s, 3),
                "greenmon_readings_per_s": round(r.readings / r.greenmon_s),
                "peak_rss_mb": round(r.peak_rss_bytes / 1e6, 1),
                "load_average": [round(x, 2) for x in r.load],
            }
            for r in self.ranges
        ]
        if self.ranges:
            shortest = min(self.ranges, key=lambda r: r.days)
            longest = max(self.ranges, key=lambda r: r.days)
            peaks = [r.peak_rss_bytes / 1e6 for r in self.ranges]
            checks[f"peak_rss_of_every_range_within_{RSS_LIMIT_MB:g}MB"] = (
                max(peaks) <= RSS_LIMIT_MB
            )
            checks[f"peak_rss_{longest.days}d_within_{RSS_GROWTH_LIMIT:g}x_{shortest.days}d"] = (
                longest.peak_rss_bytes <= RSS_GROWTH_LIMIT * shortest.peak_rss_bytes
            )
        return {
            "meters": self.meters,
            "enterprises": self.enterprises,
            "days": self.days,
            "readings": self.readings,
            "points_written": self.points,
            "chunks": self.chunks,
            "chunk_readings": self.chunk_readings,
            "cores": self.cores,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "read_s": round(read, 3),
            "read_rows_per_s": round(self.readings / read) if read else None,
            "write_s": round(write, 3),
            "write_points_per_s": round(written / write) if write else None,
            "greenmon_s": round(greenmon, 3),
            "greenmon_readings_per_s": round(self.readings / greenmon) if greenmon else None,
            "ratio_to_read_plus_write": round(ratio, 3),
            "peak_rss_mb": round(rss_mb, 1),
            "rounds": [
                {
                    "read_s": round(r.read_s, 3),
                    "write_s": round(r.write_s, 3),
                    "greenmon_s": round(r.greenmon_s, 3),
                    "ratio": round(r.ratio, 3),
                    "peak_rss_mb": round(r.peak_rss_bytes / 1e6, 1),
                    "greenmon_phases_s": {k: round(v, 3) for k, v in r.phases.items()},
                }
                for r in self.rounds
            ],
            "ranges": by_range,
            "checks": checks,
            "method": "medians over rounds, each measurement after wait_quiet; read = the "
            "range's readings as CSV, one GROUP BY meter query per local day, unparsed; write = "
            "greenmon's own request bodies posted again; greenmon = the CLI in its own process",
        }


# --------------------------------------------------------------------------- loading


def _load(client: InfluxClient, readings: pl.DataFrame, meters: pl.DataFrame) -> int:
    """Write the fleet's readings as ``meter_reading`` (tags enterprise, meter, carrier), in
    its retention policy, as the ingestor does."""
    tags = meters.select(
        pl.col("meter_id").alias("meter"), pl.col("enterprise_id").alias("enterprise"), "carrier"
    )
    rp = client.policy(READINGS)
    written = 0
    for offset in range(0, readings.height, _LOAD_ROWS):
        part = readings.slice(offset, _LOAD_ROWS).join(tags, on="meter", how="left")
        lines = to_lines(part, READINGS, ["enterprise", "meter", "carrier"], ["value"])
        for at in range(0, lines.len(), 20_000):
            body = lines.slice(at, 20_000).str.join("\n").item().encode("utf-8")
            written += client.write_body(body, min(20_000, lines.len() - at), "ms", rp=rp)
    return written


class _Capture(InfluxClient):
    """Reads through to InfluxDB; records every write body to `sink` instead of sending it."""

    def __init__(self, url: str, database: str, sink: BinaryIO) -> None:
        super().__init__(url, database, timeout=600, policies=_POLICIES)
        self.sink = sink

    def write_body(
        self, body: bytes, lines: int, precision: str = "ns", *, rp: str | None = None
    ) -> int:
        self.sink.write(_FRAME.pack(len(body), lines))
        self.sink.write(body)
        return lines


def _bodies(path: Path) -> Iterator[tuple[bytes, int]]:
    with path.open("rb") as fh:
        while header := fh.read(_FRAME.size):
            size, lines = _FRAME.unpack(header)
            yield fh.read(size), lines


# --------------------------------------------------------------------------- measurements


def _days(start: datetime, days: int) -> list[tuple[int, int]]:
    """Epoch-ms bounds of each local day of the range."""
    out = []
    for d in range(days):
        lo = (start + timedelta(days=d)).astimezone(UTC)
        hi = (start + timedelta(days=d + 1)).astimezone(UTC)
        out.append((int(lo.timestamp() * 1000), int(hi.timestamp() * 1000)))
    return out


def read_limit(url: str, bounds: list[tuple[int, int]]) -> tuple[float, int, int]:
    """(seconds, rows, bytes): the readings of `bounds` fetched as CSV, one query each."""
    rows = size = 0
    source = source_of(Settings(), READINGS)
    with httpx.Client(base_url=url, timeout=600) as http:
        started = time.perf_counter()
        for lo, hi in bounds:
            query = (
                f'SELECT "value" FROM {source} WHERE time >= {lo}ms AND time < {hi}ms '
                'GROUP BY "meter"'
            )
            resp = http.post(
                "/query",
                params={"db": _DATABASE, "epoch": "ms"},
                data={"q": query},
                headers={"Accept": "application/csv"},
            )
            resp.raise_for_status()
            body = resp.content
            size += len(body)
            rows += max(0, body.count(b"\n") - 1)
        return time.perf_counter() - started, rows, size


def write_limit(url: str, bodies: Path) -> float:
    """Seconds to post the captured request bodies, as they were, to `_LIMIT_DATABASE`."""
    with httpx.Client(base_url=url, timeout=600) as http:
        http.post("/query", data={"q": f'CREATE DATABASE "{_LIMIT_DATABASE}"'}).raise_for_status()
        elapsed = 0.0
        for body, _lines in _bodies(bodies):
            started = time.perf_counter()
            resp = http.post(
                "/write",
                params={"db": _LIMIT_DATABASE, "precision": "ms"},
                content=body,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            elapsed += time.perf_counter() - started
            resp.raise_for_status()
        return elapsed


# A small launcher forks and execs greenmon and reports that child's peak RSS: Linux carries a
# process's peak RSS across fork and exec, so a child started straight from this benchmark
# process (gigabytes, with the fleet it generated) would report this process's peak, not its own.
_LAUNCHER: Final = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write("\\n@@peak_rss_kb=%d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def greenmon_run(argv: list[str], log: Path) -> tuple[float, int, dict[str, Any]]:
    """(seconds, peak RSS bytes, --json summary) of one ``greenmon aggregate`` process."""
    errors = log.with_suffix(".err")
    with log.open("wb") as out, errors.open("wb") as err:
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-c", _LAUNCHER, *argv], stdout=out, stderr=err)
        elapsed = time.perf_counter() - started
    text = errors.read_text(errors="replace")
    if code != 0 or "@@peak_rss_kb=" not in text:
        raise RuntimeError(f"greenmon aggregate failed (exit {code}):\n{text[-2000:]}")
    peak_kb = int(text.rsplit("@@peak_rss_kb=", 1)[1].split()[0])
    return elapsed, peak_kb * 1024, json.loads(log.read_text())


# --------------------------------------------------------------------------- the run


def run_influx_bench(
    meters: int = 10_000,
    days: int = 1,
    *,
    rounds: int = 3,
    seed: int = 0,
    chunk_readings: int | None = None,
    meter_windows: str | None = None,
    ranges: tuple[int, ...] = (),
    say: Say | None = None,
) -> InfluxBenchResult:
    """Generate the fleet, load it into a private influxd, and measure `rounds` rounds; then
    one ``greenmon aggregate`` per range of `ranges` days (the fleet covers the longest)."""
    note = say or (lambda _msg: None)
    span = max((days, *ranges))
    with tempfile.TemporaryDirectory(prefix="greenmon-bench-influx-") as tmp:
        folder = Path(tmp)
        note(f"generating {meters:,} meters x {span} days (every fault kind)")
        data = generate(meters, span, seed, folder / "fleet")
        registry = data.registry
        services = LocalServices(folder / "services")
        services.runtime_dir.mkdir(parents=True, exist_ok=True)
        services.start("influxd")
        try:
            url = services.influx_url
            with InfluxClient(url, _DATABASE, timeout=600, policies=_POLICIES) as client:
                ensure_retention(client, Settings(database=_DATABASE), alter=False)
                note(f"loading {data.readings.height:,} readings into a private influxd")
                _load(client, data.readings, registry.meters)
            del data
            start = _FIRST_DAY
            end = start + timedelta(days=days)
            frm, to = f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"
            opts = default_options(tz=TZ)
            if chunk_readings is not None:
                opts = default_options(tz=TZ, chunk_readings=chunk_readings)
            if meter_windows is not None:
                per_meter = tuple(w.strip() for w in meter_windows.split(",") if w.strip())
                opts = default_options(
                    tz=TZ, chunk_readings=opts.chunk_readings, meter_windows=per_meter
                )
            note("capturing the points greenmon writes (for the write limit)")
            bodies = folder / "bodies.bin"
            with bodies.open("wb") as sink, _Capture(url, _DATABASE, sink) as capture:
                captured = run_range(
                    capture, registry, start.astimezone(UTC), end.astimezone(UTC), opts, keep=()
                )

            def argv(frm: str, to: str) -> list[str]:
                return [
                    sys.executable, "-m", "greenmon.cli", "aggregate", "--registry",
                    str(registry.root), "--influx-url", url, "--database", _DATABASE,
                    "--runtime-dir", str(folder / "run"), "--from", frm, "--to", to, "--json",
                    "--chunk-readings", str(opts.chunk_readings),
                    "--meter-windows", ",".join(opts.meter_windows),
                ]  # fmt: skip

            bounds = _days(start, days)
            results: list[InfluxRound] = []
            readings = read_bytes = 0
            points: dict[str, int] = {}
            chunks = 0
            for r in range(rounds):
                note(f"round {r + 1}/{rounds}: InfluxDB read and write limits, then greenmon")
                wait_quiet()
                read_s, readings, read_bytes = read_limit(url, bounds)
                wait_quiet()
                write_s = write_limit(url, bodies)
                wait_quiet()
                seconds, rss, summary = greenmon_run(argv(frm, to), folder / f"greenmon-{r}.log")
                points, chunks = summary["written"], summary["chunks"]
                if points != captured.written:
                    raise RuntimeError(f"greenmon wrote {points}, the capture {captured.written}")
                results.append(InfluxRound(read_s, write_s, seconds, rss, summary["seconds"]))
            by_range: list[RangeRun] = []
            for length in ranges:
                last = f"{start + timedelta(days=length):%Y-%m-%d}"
                note(f"greenmon aggregate over {length} day(s): time and peak RSS")
                wait_quiet()
                log = folder / f"greenmon-range-{length}.log"
                seconds, rss, summary = greenmon_run(argv(frm, last), log)
                by_range.append(
                    RangeRun(
                        days=length,
                        readings=summary["readings"],
                        points=sum(summary["written"].values()),
                        chunks=summary["chunks"],
                        greenmon_s=seconds,
                        peak_rss_bytes=rss,
                        load=os.getloadavg(),
                    )
                )
        finally:
            services.stop("influxd")
    return InfluxBenchResult(
        meters=registry.meters.height,
        enterprises=registry.enterprises.height,
        days=days,
        readings=readings,
        read_bytes=read_bytes,
        points=points,
        chunks=chunks,
        chunk_readings=opts.chunk_readings or 0,
        rounds=results,
        cores=os.cpu_count() or 1,
        ranges=by_range,
    )


# --------------------------------------------------------------------------- report


def print_report(summary: dict[str, Any]) -> None:
    """The figures as a table, each beside its limit, then the checks."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    written = sum(summary["points_written"].values())
    table = Table(
        title=f"aggregate against a private influxd: {summary['readings']:,} readings "
        f"({summary['enterprises']:,} enterprises, {summary['meters']:,} meters x "
        f"{summary['days']} days) -> {written:,} points, {summary['cores']} cores"
    )
    for column in ("figure", "median s", "rate", "rounds s"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    rounds = summary["rounds"]

    def each(key: str) -> str:
        return " / ".join(f"{r[key]:.2f}" for r in rounds)

    table.add_row(
        "InfluxDB read (CSV, unparsed)", f"{summary['read_s']:.2f}",
        f"{summary['read_rows_per_s']:,} rows/s", each("read_s"),
    )  # fmt: skip
    table.add_row(
        "InfluxDB write (greenmon's bodies)", f"{summary['write_s']:.2f}",
        f"{summary['write_points_per_s']:,} points/s", each("write_s"),
    )  # fmt: skip
    table.add_row(
        "greenmon aggregate, end to end", f"{summary['greenmon_s']:.2f}",
        f"{summary['greenmon_readings_per_s']:,} readings/s", each("greenmon_s"),
    )  # fmt: skip
    table.add_row(
        "ratio greenmon / (read + write)", f"{summary['ratio_to_read_plus_write']:.2f}",
        f"limit {RATIO_LIMIT:g}", each("ratio"),
    )  # fmt: skip
    table.add_row(
        "greenmon peak RSS (MB)", f"{summary['peak_rss_mb']:.0f}",
        f"limit {RSS_LIMIT_MB:g}", each("peak_rss_mb"),
    )  # fmt: skip
    console.print(table)
    phases = ", ".join(
        f"{k} {statistics.median([r['greenmon_phases_s'].get(k, 0.0) for r in rounds]):.2f} s"
        for k in rounds[0]["greenmon_phases_s"]
    )
    console.print(f"greenmon's own phases (median): {phases}; {summary['chunks']} chunk(s)")
    console.print(
        "points written: " + ", ".join(f"{k} {v:,}" for k, v in summary["points_written"].items())
    )
    load = ", ".join(f"{x:.2f}" for x in summary["load_average"])
    console.print(f"load average after the run: {load}; method: {summary['method']}")
    if summary["ranges"]:
        ranges = Table(title="greenmon aggregate over longer ranges (one run each, from day 1)")
        for column in ("range", "readings", "points written", "chunks", "s", "readings/s",
                       "peak RSS MB", "load"):  # fmt: skip
            ranges.add_column(column, justify="right", overflow="fold")  # no digits cut
        for r in summary["ranges"]:
            ranges.add_row(
                f"{r['days']} d", f"{r['readings']:,}", f"{r['points_written']:,}",
                str(r["chunks"]), f"{r['greenmon_s']:.1f}", f"{r['greenmon_readings_per_s']:,}",
                f"{r['peak_rss_mb']:.0f}", f"{r['load_average'][0]:.2f}",
            )  # fmt: skip
        console.print(ranges)
        console.print(
            f"limits: peak RSS {RSS_LIMIT_MB:g} MB for every range; the longest range's at "
            f"most {RSS_GROWTH_LIMIT:g}x the shortest's"
        )
    for check, ok in summary["checks"].items():
        console.print(f"{'PASS' if ok else 'FAIL'}  {check}")
