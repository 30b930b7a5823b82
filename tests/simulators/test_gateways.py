"""Gateways against the real broker: every message that is not dropped arrives, exactly."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import polars as pl
import pytest
import typer
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from greenmon.simulators.cli import register
from greenmon.simulators.errors import PublishError
from greenmon.simulators.outfile import read_out_file

pytestmark = pytest.mark.integration
runner = CliRunner()


class Subscriber:
    """Everything published under greenmon/v1/#, as (topic, payload) pairs."""

    def __init__(self, mqtt_url: str, client_id: str) -> None:
        host, port = mqtt_url.split("//")[1].split(":")
        self.got: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.on_subscribe = lambda *_a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.subscribe("greenmon/v1/#", qos=1)
        self.client.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.got.append((msg.topic, msg.payload.decode("utf-8")))

    def wait(self, n: int, timeout: float = 30) -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    break
            time.sleep(0.05)
        time.sleep(0.3)  # anything extra would show up now
        with self.lock:
            return list(self.got)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def subscriber(mqtt_url: str, tmp_path: Path) -> Iterator[Subscriber]:
    sub = Subscriber(mqtt_url, "sub-" + tmp_path.name[-20:])
    yield sub
    sub.close()


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gw") / "fleet"
    result = runner.invoke(
        typer_app(), ["simulate", "fleet", "-n", "25", "--seed", "8", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def typer_app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


FAULTS = "demo,duplicate=0.02,disconnect=0.01,malformed=0.01,gap_lost=0.02"


@pytest.mark.parametrize("processes", ["1", "3"])
def test_run_against_the_broker_delivers_every_message(
    app: typer.Typer,
    fleet_dir: Path,
    mqtt_url: str,
    subscriber: Subscriber,
    tmp_path: Path,
    processes: str,
) -> None:
    common = [
        "simulate",
        "run",
        "--registry",
        str(fleet_dir),
        "--faults",
        FAULTS,
        "--days",
        "0.5",
        "--json",
    ]
    offline = runner.invoke(app, [*common, "--out-file", str(tmp_path / "m.jsonl")])
    assert offline.exit_code == 0, offline.output
    expected = read_out_file(tmp_path / "m.jsonl")
    result = runner.invoke(
        app,
        [*common, "--mqtt-url", mqtt_url, "--truth", str(tmp_path / "t.parquet"),
         "--processes", processes],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["published"] == summary["messages"] == expected.height
    assert summary["reconnects"] == summary["faults"]["disconnect"] > 0
    got = subscriber.wait(expected.height)
    # the same messages, byte for byte, each gateway's in its order, from 1 or 3 processes
    assert Counter(got) == Counter(expected.select("topic", "payload").iter_rows())
    for client, mine in expected.group_by("client", maintain_order=True):
        topic = mine["topic"][0]
        sent = [p for t, p in got if t == topic]
        assert sent == mine["payload"].to_list() or len(set(mine["topic"])) > 1, client
    # what was sent matches the truth: lost readings are in no message, duplicates twice
    truth = pl.read_parquet(tmp_path / "t.parquet")
    assert truth.filter(pl.col("faults").list.contains("gap_lost"))["sent"].not_().all()
    assert int(truth["publishes"].sum()) > 0


def test_paced_and_rate_limited(
    app: typer.Typer, fleet_dir: Path, mqtt_url: str, subscriber: Subscriber, tmp_path: Path
) -> None:
    # 6 simulated hours at 21,600x: about one real second
    started = time.monotonic()
    result = runner.invoke(
        app,
        [
            "simulate",
            "run",
            "--registry",
            str(fleet_dir),
            "--days",
            "0.25",
            "--speed",
            "21600",
            "--mqtt-url",
            mqtt_url,
            "--json",
        ],
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert 0.9 < elapsed < 15
    assert len(subscriber.wait(summary["messages"])) == summary["messages"]
    # replay of an out-file under a rate cap
    out = tmp_path / "r.jsonl"
    assert (
        runner.invoke(
            app,
            [
                "simulate",
                "run",
                "--registry",
                str(fleet_dir),
                "--days",
                "0.0625",
                "--out-file",
                str(out),
            ],
        ).exit_code
        == 0
    )
    n = read_out_file(out).height
    started = time.monotonic()
    result = runner.invoke(
        app,
        ["simulate", "replay", str(out), "--rate", str(n / 1.5), "--mqtt-url", mqtt_url, "--json"],
    )
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started > 1.3
    assert json.loads(result.stdout)["published"] == n
    assert len(subscriber.wait(summary["messages"] + n)) == summary["messages"] + n


@pytest.mark.integration
def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    from greenmon.deploy.local import free_port
    from greenmon.simulators.errors import PublishError
    from greenmon.simulators.gateways import PublishOptions, publish

    messages = pl.DataFrame(
        {
            "at_ms": [0],
            "client": ["E0001-GW01"],
            "topic": ["greenmon/v1/E0001/E0001-GW01/readings"],
            "payload": ["{}"],
            "reconnect": [False],
        }
    )
    opts = PublishOptions(mqtt_url=f"mqtt://127.0.0.1:{free_port()}", connect_attempts=2)
    with pytest.raises(PublishError, match="E0001-GW01: cannot connect"):
        publish(messages, opts)
    with pytest.raises(PublishError, match="mqtt://host:port"):
        publish(messages, PublishOptions(mqtt_url="http://127.0.0.1:1"))


def test_gateways_are_dealt_whole_and_balanced() -> None:
    from greenmon.simulators.gateways import shares

    messages = pl.DataFrame({"client": ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"] * 1})
    assert shares(messages, 2) == [["a", "d", "e"], ["b", "c"]]  # 8 and 7 messages
    assert shares(messages, 2) == shares(messages.reverse(), 2)  # deterministic
    assert shares(messages, 9) == [["a"], ["b"], ["c"], ["d"], ["e"]]


@pytest.mark.parametrize("processes", [1, 2])
def test_publish_over_tls_with_each_gateways_credentials(tmp_path: Path, processes: int) -> None:
    """mqtts:// with the broker's ACL: each gateway logs in as itself (credentials.csv) and
    every message arrives, byte for byte, through one TLS context per process."""
    from greenmon.deploy.broker_auth import write_broker_auth
    from greenmon.deploy.local import LocalServices
    from greenmon.deploy.tls import create_dev_tls
    from greenmon.simulators.gateways import PublishOptions, load_credentials, publish

    gateways = [("E0001", "E0001-GW01"), ("E0002", "E0002-GW01"), ("E0002", "E0002-GW02")]
    tls = create_dev_tls(tmp_path / "tls")
    auth = write_broker_auth(tmp_path / "auth", gateways)
    svc = LocalServices(tmp_path / "run", broker_auth=auth, tls=tls)
    svc.runtime_dir.mkdir(parents=True, exist_ok=True)
    svc.start("mosquitto")
    got: list[tuple[str, str]] = []
    lock = threading.Lock()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="tls-sub", protocol=paho.MQTTv5)
    try:
        host, port = svc.mqtt_url.split("//")[1].split(":")
        sub.tls_set(ca_certs=str(tls.ca_cert))
        sub.username_pw_set(auth.ingestor.username, auth.ingestor.password.get_secret_value())
        ready = threading.Event()
        sub.on_subscribe = lambda *_a: ready.set()

        def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
            with lock:
                got.append((msg.topic, msg.payload.decode("utf-8")))

        sub.on_message = on_message
        sub.connect(host, int(port))
        sub.subscribe("greenmon/v1/#", qos=1)
        sub.loop_start()
        assert ready.wait(10)
        rows = [
            (i, gw, f"greenmon/v1/{ent}/{gw}/readings", f'{{"gateway":"{gw}","n":{i}}}', i == 40)
            for i in range(120)
            for ent, gw in [gateways[i % 3]]
        ]
        messages = pl.DataFrame(
            rows, schema=["at_ms", "client", "topic", "payload", "reconnect"], orient="row"
        )
        opts = PublishOptions(
            mqtt_url=svc.mqtt_url,
            ca_file=tls.ca_cert,
            credentials=load_credentials(auth.credentials_csv),
            processes=processes,
        )
        result = publish(messages, opts)
        assert result.published == messages.height
        assert result.reconnects == 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(got) < messages.height:
            time.sleep(0.05)
        time.sleep(0.3)
        with lock:
            assert Counter(got) == Counter(messages.select("topic", "payload").iter_rows())
        # without the gateways' own passwords the broker refuses them: a clear error
        with pytest.raises(PublishError, match="cannot connect"):
            publish(messages.head(1), PublishOptions(mqtt_url=svc.mqtt_url, ca_file=tls.ca_cert,
                                                     connect_attempts=1))  # fmt: skip
    finally:
        sub.loop_stop()
        sub.disconnect()
        svc.stop("mosquitto")


def test_a_topic_paho_would_refuse_is_a_clear_error_before_any_connection() -> None:
    from greenmon.simulators.gateways import PublishOptions, publish

    messages = pl.DataFrame(
        {
            "at_ms": [0, 1],
            "client": ["E0001-GW01"] * 2,
            "topic": ["greenmon/v1/E0001/E0001-GW01/readings", "greenmon/v1/E0001/+/readings"],
            "payload": ["{}", "{}"],
            "reconnect": [False, False],
        }
    )
    with pytest.raises(PublishError, match=r"topic 'greenmon/v1/E0001/\+/readings'"):
        publish(messages, PublishOptions(mqtt_url="mqtt://127.0.0.1:1", connect_attempts=1))
