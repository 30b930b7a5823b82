"""Alert test helpers that need the real services: daily ``energy`` points written straight
into InfluxDB, a real HTTP server standing in for a webhook, the CLI run in-process and as a
child process, and the retained MQTT state read back by a late subscriber."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from greenmon.aggregator.store import write_frame
from greenmon.cli import app
from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.registry import Registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_totals(
    influx_url: str, database: str, registry: Registry, rows: pl.DataFrame, key: str, window: str
) -> int:
    """`rows` (``enterprise``, `key` a local date, ``dc_kgce``, ``completeness``) as the
    aggregator's ``energy`` total points of `window`."""
    tags = registry.enterprises.select(
        pl.col("enterprise_id").alias("enterprise"), "county", "industry"
    )
    frame = rows.join(tags, on="enterprise").with_columns(
        pl.col(key).cast(pl.Datetime("ms")).dt.replace_time_zone("Asia/Shanghai")
        .dt.convert_time_zone("UTC").alias("time"),
        pl.lit("total").alias("carrier"),
        pl.lit(window).alias("window"),
        pl.col("dc_kgce").alias("kgce"),
        pl.col("dc_kgce").alias("double_control_kgce"),
    )  # fmt: skip
    with InfluxClient(influx_url, database) as client:
        client.ensure_database()
        return write_frame(client, "energy", frame)


def write_daily(influx_url: str, database: str, registry: Registry, daily: pl.DataFrame) -> int:
    """Write `DAILY_SCHEMA` rows as the aggregator's ``energy`` window=1d carrier=total points."""
    return _write_totals(influx_url, database, registry, daily, "day", "1d")


def write_monthly(influx_url: str, database: str, registry: Registry, daily: pl.DataFrame) -> int:
    """Write the monthly windows of `daily` as the aggregator does (window=1mo: the sums)."""
    from greenmon.rules.alerts.evaluate import months_from_daily

    months = months_from_daily(daily).drop("days")
    return _write_totals(influx_url, database, registry, months, "month", "1mo")


@dataclass
class Hook:
    """A real HTTP server on 127.0.0.1 answering like a group robot; `status` and `answer`
    say how it answers, `posts` holds every request body (parsed) and query string."""

    port: int
    status: int = 200
    answer: dict[str, Any] = field(default_factory=lambda: {"errcode": 0, "errmsg": "ok"})
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Hook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                hook.posts.append((self.path, body))
                payload = json.dumps(hook.answer).encode()
                self.send_response(hook.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def texts(self) -> list[str]:
        """The markdown of every message received (DingTalk or WeCom)."""
        out = []
        for _path, body in self.posts:
            md = body.get("markdown", {})
            out.append(md.get("text") or md.get("content") or json.dumps(body, ensure_ascii=False))
        return out


@contextmanager
def hook_server(port: int | None = None, **kwargs: Any) -> Iterator[Hook]:
    hook = Hook(port or free_port(), **kwargs).start()
    try:
        yield hook
    finally:
        hook.stop()


def cli_args(
    services: LocalServices, database: str, registry: Path, runtime: Path, *extra: str
) -> list[str]:
    return [
        "--influx-url", services.influx_url, "--mqtt-url", services.mqtt_url,
        "--database", database, "--registry", str(registry), "--runtime-dir", str(runtime),
        *extra,
    ]  # fmt: skip


def run_cli(args: Sequence[str], env: dict[str, str] | None = None) -> Any:
    """`greenmon ARGS` in this process (CliRunner); the result's output and exit code."""
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return result


def check_json(args: Sequence[str], env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    result = run_cli(["alerts", "check", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    start = result.stdout.index("[")
    return json.loads(result.stdout[start : result.stdout.rindex("]") + 1])


def run_child(args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`greenmon ARGS` as a new process (what a user sees, exit code included)."""
    own = ("GREENMON_MQTT_TOPIC_PREFIX",)  # see the `topic_prefix` fixture
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENMON_") or k in own}
    env["COLUMNS"] = "400"  # long file:line messages on one line
    return subprocess.run(
        [sys.executable, "-m", "greenmon.cli", *args],
        capture_output=True, text=True, timeout=300, env=env, cwd=cwd,
    )  # fmt: skip


def retained(mqtt_url: str, topic: str = "greenmon/v1/alerts/#", settle: float = 1.5) -> dict:
    """The retained messages a client connecting now receives: topic -> payload (JSON)."""
    host, port = mqtt_url.split("//")[1].split(":")
    got: dict[str, Any] = {}
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"late-{time.time_ns()}")

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if msg.retain:
            got[msg.topic] = json.loads(msg.payload)

    client.on_message = on_message
    client.connect(host, int(port))
    client.subscribe(topic, qos=1)
    client.loop_start()
    time.sleep(settle)
    client.loop_stop()
    client.disconnect()
    return got
