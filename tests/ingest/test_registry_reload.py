"""Registry changes while `greenmon ingest` runs: picked up without a restart, validated first,
bad edits refused while ingest goes on with the registry it had; nothing lost meanwhile."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from greenmon.deploy.local import LocalServices
from greenmon.ingest.codec import DecodeLimits, encode_batch, topic_for
from greenmon.ingest.deadletter import DeadLetterSink
from greenmon.ingest.metrics import IngestMetrics
from greenmon.ingest.pipeline import Pipeline
from greenmon.ingest.spool import Spool
from greenmon.registry import load_registry
from tests.ingest.support import (
    BASE_MS,
    REGISTRY,
    IngestProc,
    Publisher,
    ingest_args,
    message,
    own_registry,
    stored,
    wait_stored,
)
from tests.ingest.support import client as support_client

pytestmark = pytest.mark.integration

NEW = "E0002-NG-NEW"
NEW_ROW = f"{NEW},E0002,natural_gas,m3,register,1,9999999,boundary,false,\n"


def _registry_with(tmp: Path, name: str, extra_rows: str) -> Path:
    root = tmp / name
    shutil.copytree(REGISTRY, root)
    with (root / "meters.csv").open("a", encoding="utf-8") as fh:
        fh.write(extra_rows)
    return root


def test_each_message_is_decoded_against_one_registry_never_a_mix(
    services: LocalServices, database: str, tmp_path: Path
) -> None:
    """Registry A knows meter X1 only, B knows X2 only; every message carries one reading of
    each. Swapping A and B as fast as possible while messages are handled, each message must
    have exactly one reading accepted and one rejected: never both, never neither."""
    row = "{},E0002,electricity,kWh,register,1,,boundary,false,\n"
    reg_a = load_registry(_registry_with(tmp_path, "a", row.format("E0002-X1")))
    reg_b = load_registry(_registry_with(tmp_path, "b", row.format("E0002-X2")))
    client = support_client(services.influx_url, database)  # raw readings' policy included
    dead = DeadLetterSink(tmp_path / "dead.jsonl")
    acked: list[object] = []
    pipe = Pipeline(
        reg_a, client, Spool(tmp_path / "spool"), dead, IngestMetrics(), acked.append,
        limits=DecodeLimits(max_future_skew_s=1e9), batch_lines=200,
    )  # fmt: skip
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            pipe.set_registry(reg_b if swaps % 2 == 0 else reg_a)
            swaps += 1

    n = 3000
    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        for i in range(n):
            ts = BASE_MS + i * 1000
            payload = encode_batch(
                "gw-01",
                ts,
                [{"meter": "E0002-X1", "value": float(i)}, {"meter": "E0002-X2", "value": -i}],
            )
            pipe.handle(topic_for("E0002", "gw-01"), payload, i)
    finally:
        stop.set()
        thread.join()
    assert pipe.drain()
    pipe.close()
    assert swaps > 100, "the swapper hardly ran: the test would prove nothing"
    assert len(acked) == n
    letters = [json.loads(ln) for ln in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(letters) == n  # every message had a rejection...
    assert all(len(x["rejections"]) == 1 for x in letters)  # ... and only one
    assert {x["rejections"][0]["reason"] for x in letters} == {"unknown_meter"}
    assert len({json.loads(x["payload"])["ts"] for x in letters}) == n
    assert wait_stored(services.influx_url, database, n) == n
    got = stored(services.influx_url, database)
    assert len({ts for _m, ts, _v in got}) == n  # one accepted reading per message
    assert any(m == "E0002-X1" for m, _t, _v in got) and any(m == "E0002-X2" for m, _t, _v in got)
    client.close()


def _wait_log(ing: IngestProc, text: str, since: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with ing.log.open("rb") as fh:
            fh.seek(since)
            if text.encode() in fh.read():
                return
        assert ing.proc is not None and ing.proc.poll() is None, ing.log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {timeout} s:\n{ing.log.read_text()}")


def _new_reading(seq: int) -> tuple[str, bytes, tuple[str, int, float]]:
    ts = BASE_MS + 10_000_000 + seq * 1000
    value = 100.0 + seq
    payload = encode_batch("gw-02", ts, [{"meter": NEW, "value": value, "unit": "m3"}])
    return topic_for("E0002", "gw-02"), payload, (NEW, ts * 1_000_000, value)


def test_registry_edits_while_ingest_runs(
    services: LocalServices, database: str, tmp_path: Path
) -> None:
    registry = own_registry(tmp_path)
    runtime = tmp_path / "rt"
    args = ingest_args(services.mqtt_url, services.influx_url, database, runtime,
                       "--client-id", database, registry=registry)  # fmt: skip
    ing = IngestProc(args, runtime).start().wait_subscribed()
    pub = Publisher(services.mqtt_url, client_id="gw-" + database)
    expected: set[tuple[str, int, float]] = set()
    seq = 0
    streaming = threading.Event()
    streaming.set()
    lock = threading.Lock()

    def publish(topic: str, payload: bytes) -> None:
        nonlocal seq
        with lock:
            pub.publish(seq, topic, payload)
            seq += 1

    def stream() -> None:
        # Known meters all along: not one of these may be lost across the reloads.
        i = 0
        while streaming.is_set():
            topic, payload, exp = message(i, 3)
            publish(topic, payload)
            with lock:
                expected.update(exp)
            i += 1
            time.sleep(0.01)

    streamer = threading.Thread(target=stream)
    streamer.start()
    meters = registry / "meters.csv"
    good = meters.read_text(encoding="utf-8")
    try:
        # 1. Not registered yet: dead-lettered.
        topic, payload, early = _new_reading(0)
        publish(topic, payload)
        # 2. Registered while running: accepted from then on, no restart.
        mark = ing.log.stat().st_size
        meters.write_text(good + NEW_ROW, encoding="utf-8")
        _wait_log(ing, "meters added 1 (E0002-NG-NEW)", mark)
        topic, payload, after_add = _new_reading(1)
        publish(topic, payload)
        # 3. A broken edit: refused with every problem, the registry in use stays.
        mark = ing.log.stat().st_size
        meters.write_text(
            good + NEW_ROW + "E0002-BAD,E0002,gass,m3,register,1,,boundary,false,\n"
            "E0002-BAD2,E0404,electricity,kWh,register,1,,boundary,false,\n",
            encoding="utf-8",
        )
        _wait_log(ing, "previous registry stays in use", mark)
        log_text = ing.log.read_text()
        assert "unknown carrier 'gass'" in log_text and "unknown enterprise 'E0404'" in log_text
        topic, payload, after_refusal = _new_reading(2)
        publish(topic, payload)
        # 4. SIGHUP reloads on request (and does not stop the ingestor).
        meters.write_text(good + NEW_ROW, encoding="utf-8")
        mark = ing.log.stat().st_size
        assert ing.proc is not None
        os.kill(ing.proc.pid, signal.SIGHUP)
        _wait_log(ing, "reload requested, files unchanged", mark)
        time.sleep(1.5)  # a few more streamed messages after the reloads
    finally:
        streaming.clear()
        streamer.join()
    pub.wait_acked(seq, timeout=60)
    assert len(pub.acked) == seq
    want = expected | {after_add, after_refusal}
    assert wait_stored(services.influx_url, database, len(want)) == len(want)
    got = stored(services.influx_url, database)
    assert want <= got
    assert early not in got  # sent before it was registered: a dead letter (see replay)
    pub.close()
    summary = ing.stop()
    reloads = summary["registry_reloads"]
    assert isinstance(reloads, dict)
    # Putting back the registry in use after the refused edit is no change (and SIGHUP
    # reloaded the same files): one edit applied, one refused.
    assert reloads["applied"] == 1 and reloads["refused"] == 1, reloads
    assert reloads["unchanged"] >= 1, reloads
    letters = (runtime / "ingest" / database / "dead_letters.jsonl").read_text()
    assert letters.count('"unknown_meter"') == 1 and NEW in letters
