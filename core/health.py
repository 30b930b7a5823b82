"""Liveness of the long-running commands: heartbeat files, and the probe that judges them.

`aggregate --follow` (and the other commands that run in rounds) write
``<runtime-dir>/health/<name>.json`` after every round: when it ended, whether it succeeded,
when the last successful one ended, and a short detail (the error of a failed round). A
container health check, a systemd timer or any monitoring agent then runs::

    python -m greenmon.health heartbeat /var/lib/greenmon/run/health/aggregate.json --max-age 900
    python -m greenmon.health metrics http://127.0.0.1:9108/metrics \
        --expect greenmon_ingest_mqtt_connected=1

and gets exit status 0 (healthy) or 1 (not, with the reason on stderr). `heartbeat` is healthy
while the last *successful* round is at most ``--max-age`` seconds old, so one failed round
(InfluxDB restarting) does not flap, but a process that hangs, dies or keeps failing does.
`metrics` reads a Prometheus text endpoint (the ingestor's ``/metrics``) and checks samples.

This module imports only the standard library: a probe that runs every 30 s should cost
milliseconds, not the whole command line's imports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HEALTH_DIR = "health"


def heartbeat_path(runtime_dir: Path, name: str) -> Path:
    """Where the command called `name` (``aggregate``, ``alerts``) writes its heartbeat."""
    return runtime_dir / HEALTH_DIR / f"{name}.json"


class Heartbeat:
    """Writes one command's heartbeat file, atomically (a probe never reads half a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_ok: float | None = None
        self.rounds = 0

    def beat(self, ok: bool, detail: str = "", *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.rounds += 1
        if ok:
            self.last_ok = now
        record = {
            "time": now,
            "ok": ok,
            "last_ok": self.last_ok,
            "rounds": self.rounds,
            "pid": os.getpid(),
            "detail": detail[:500],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reason: str


def judge_heartbeat(text: str | None, max_age_s: float, now: float) -> Verdict:
    """Pure: the verdict on a heartbeat file's content (None: there is no file)."""
    if text is None:
        return Verdict(False, "no heartbeat yet (the command has not finished a round)")
    try:
        record = json.loads(text)
        last_ok = record.get("last_ok")
        last = float(record["time"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return Verdict(False, "heartbeat file is not a greenmon heartbeat")
    detail = str(record.get("detail") or "")
    if last_ok is None:
        return Verdict(False, f"no successful round yet; last round failed: {detail}")
    age = now - float(last_ok)
    if age > max_age_s:
        why = f"last successful round {age:.0f} s ago (limit {max_age_s:g} s)"
        if not record.get("ok"):
            why += f"; last round, {now - last:.0f} s ago, failed: {detail}"
        return Verdict(False, why)
    return Verdict(True, f"last successful round {age:.0f} s ago")


def judge_metrics(text: str, expect: dict[str, float]) -> Verdict:
    """Pure: check Prometheus text-format samples (``name value`` lines, no labels) against
    the expected values."""
    seen: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        try:
            seen[name] = float(rest.split()[0])
        except (ValueError, IndexError):
            continue
    wrong = []
    for name, value in expect.items():
        if name not in seen:
            wrong.append(f"{name} missing")
        elif seen[name] != value:
            wrong.append(f"{name} is {seen[name]:g}, expected {value:g}")
    if wrong:
        return Verdict(False, "; ".join(wrong))
    return Verdict(True, ", ".join(f"{k}={v:g}" for k, v in expect.items()) or "answering")


def _expectation(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value must be a number") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m greenmon.health",
        description="Health probe for greenmon's long-running commands: exit 0 when "
        "healthy, 1 when not (the reason on stderr).",
    )
    sub = p.add_subparsers(dest="probe", required=True)
    hb = sub.add_parser("heartbeat", help="judge a heartbeat file (aggregate --follow, ...)")
    hb.add_argument("file", type=Path, help="e.g. <runtime-dir>/health/aggregate.json")
    hb.add_argument(
        "--max-age",
        type=float,
        default=900.0,
        help="seconds the last successful round may be old (default 900)",
    )
    m = sub.add_parser("metrics", help="check samples of a Prometheus /metrics endpoint")
    m.add_argument("url", help="e.g. http://127.0.0.1:9108/metrics")
    m.add_argument(
        "--expect",
        type=_expectation,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a sample that must have this value (repeatable)",
    )
    m.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.probe == "heartbeat":
        try:
            text: str | None = args.file.read_text()
        except FileNotFoundError:
            text = None
        except OSError as exc:
            print(f"unhealthy: cannot read {args.file}: {exc}", file=sys.stderr)
            return 1
        verdict = judge_heartbeat(text, args.max_age, time.time())
    else:
        try:
            with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:
                body = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            print(f"unhealthy: {args.url}: {exc}", file=sys.stderr)
            return 1
        verdict = judge_metrics(body, dict(args.expect))
    stream = sys.stdout if verdict.healthy else sys.stderr
    print(("healthy: " if verdict.healthy else "unhealthy: ") + verdict.reason, file=stream)
    return 0 if verdict.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
