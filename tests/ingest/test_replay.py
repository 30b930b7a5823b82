"""Dead-letter replay: judged against today's registry, written exactly once, and summarised."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from greenmon.deploy.local import LocalServices
from greenmon.influx import InfluxClient
from greenmon.ingest.codec import DecodeLimits, decode, encode_batch, topic_for
from greenmon.ingest.deadletter import DeadLetterSink, Letter, letter_files, read_letters
from greenmon.ingest.replay import judge, ledger_path, replay, summarize
from greenmon.registry import Registry, load_registry
from tests.ingest.support import (
    BASE_MS,
    GREENMON,
    REGISTRY,
    IngestProc,
    Publisher,
    ingest_args,
    own_registry,
    stored,
)
from tests.ingest.support import client as support_client

NEW = "E0002-NG-NEW"
NEW_ROW = f"{NEW},E0002,natural_gas,m3,register,1,9999999,boundary,false,\n"
TOPIC = topic_for("E0002", "gw-02")
LIMITS = DecodeLimits()


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Registry]:
    root = tmp_path_factory.mktemp("reg")
    shutil.copytree(REGISTRY, root / "old")
    shutil.copytree(REGISTRY, root / "new")
    with (root / "new" / "meters.csv").open("a") as fh:
        fh.write(NEW_ROW)
    return load_registry(root / "old"), load_registry(root / "new")


def _letters(tmp: Path, messages: list[tuple[str, bytes]], registry: Registry) -> list[Letter]:
    """Dead letters as the ingestor writes them for `messages` decoded against `registry`."""
    received_ms = BASE_MS + 10**9
    sink = DeadLetterSink(tmp / "dl.jsonl", clock=lambda: received_ms / 1000)
    for topic, payload in messages:
        out = decode(topic, payload, registry, received_ms, LIMITS)
        if out.rejections:
            sink.add(topic, payload, out.rejections)
    sink.close()
    return list(read_letters([tmp / "dl.jsonl"]))


def _msg(*readings: dict[str, Any], ts: int = BASE_MS) -> bytes:
    return encode_batch("gw-02", ts, list(readings))


# -- judge: a table of cases ---------------------------------------------------------------

CASES = [
    # (what, message, written meters, still failing reasons)
    ("registered since", _msg({"meter": NEW, "value": 1.5}), [NEW], []),
    (
        "only the rejected reading is written again",
        _msg({"meter": "E0002-EL-MAIN", "value": 2.0}, {"meter": NEW, "value": 3.0}),
        [NEW],
        [],
    ),
    ("still unknown", _msg({"meter": "E0002-NOPE", "value": 1.0}), [], ["unknown_meter"]),
    (
        "registered, but its unit still does not convert",
        _msg({"meter": NEW, "value": 1.0, "unit": "kWh"}),
        [],
        ["unit_mismatch"],
    ),
    (
        "a meter of another enterprise",
        _msg({"meter": "E0001-EL-MAIN", "value": 1.0}),
        [],
        ["wrong_enterprise"],
    ),
    (
        "from the future when it arrived: judged as of then",
        _msg({"meter": NEW, "value": 1.0}, ts=BASE_MS + 10**9 + 3_600_000),
        [],
        ["future_timestamp"],
    ),
]


@pytest.mark.parametrize(
    ("what", "payload", "written", "failing"), CASES, ids=[c[0] for c in CASES]
)
def test_judge(
    what: str,
    payload: bytes,
    written: list[str],
    failing: list[str],
    registries: tuple[Registry, Registry],
    tmp_path: Path,
) -> None:
    old, new = registries
    (letter,) = _letters(tmp_path, [(TOPIC, payload)], old)
    v = judge(letter, [r.index for r in letter.rejections], new, LIMITS)
    assert [r.meter for _k, r in v.written] == written, what
    assert [reason for _k, reason, _d in v.failed] == failing, what


def test_judge_a_whole_message_refused(
    registries: tuple[Registry, Registry], tmp_path: Path
) -> None:
    old, new = registries
    (bad,) = _letters(tmp_path, [(TOPIC, b'{"meter": ')], old)
    v = judge(bad, [None], new, LIMITS)
    assert not v.written and [r for _k, r, _d in v.failed] == ["bad_json"]
    # Too large: only an excerpt is kept, so it cannot be replayed (and says so).
    big = _msg(*({"meter": NEW, "value": float(i), "ts": BASE_MS + i} for i in range(40)))
    small = DecodeLimits(max_payload_bytes=200)
    sink = DeadLetterSink(tmp_path / "big.jsonl")
    sink.add(TOPIC, big, decode(TOPIC, big, new, BASE_MS + 10**9, small).rejections)
    sink.close()
    assert (tmp_path / "big.jsonl").stat().st_size < len(big)
    (letter,) = read_letters([tmp_path / "big.jsonl"])
    assert letter.rejections[0].reason == "payload_too_large" and letter.payload is None
    v = judge(letter, [None], new, LIMITS)
    assert not v.written and v.unreplayable is not None and "excerpt" in v.unreplayable
    # A whole message refused for a reason that no longer holds is written whole.
    sink = DeadLetterSink(tmp_path / "whole.jsonl")
    sink.add(TOPIC, big, decode(TOPIC, big, new, BASE_MS + 10**9,
                                DecodeLimits(max_readings=10)).rejections)  # fmt: skip
    sink.close()
    (letter,) = read_letters([tmp_path / "whole.jsonl"])
    assert letter.rejections[0].reason == "too_many_readings"
    v = judge(letter, [None], new, LIMITS)
    assert len(v.written) == 40 and not v.failed


# -- replay on the real InfluxDB -----------------------------------------------------------


def _writer(client: InfluxClient) -> Callable[[bytes, int], object]:
    rp = client.policy("meter_reading")
    return lambda body, lines: client.write_body(body, lines, rp=rp)


def test_replay_writes_exactly_once_and_marks_what_it_did(
    services: LocalServices, database: str, registries: tuple[Registry, Registry], tmp_path: Path
) -> None:
    old, new = registries
    dead = tmp_path / "dl.jsonl"
    messages = [(TOPIC, _msg({"meter": NEW, "value": 10.0 + i}, ts=BASE_MS + i * 900_000))
                for i in range(8)]  # fmt: skip
    messages.append((TOPIC, _msg({"meter": "E0002-NOPE", "value": 1.0})))
    letters = _letters(tmp_path, messages, old)
    assert len(letters) == 9
    with support_client(services.influx_url, database) as client:
        write = _writer(client)
        dry = replay([dead], new, LIMITS, None)
        assert (dry.written, dict(dry.still_failing), dry.dry_run) == (
            8,
            {"unknown_meter": 1},
            True,
        )
        assert not ledger_path(dead).exists() or ledger_path(dead).read_text() == ""
        first = replay([dead], new, LIMITS, write)
        assert first.written == 8 and first.by_meter == {NEW: 8}
        assert first.still_failing == {"unknown_meter": 1}
        got = stored(services.influx_url, database)
        assert got == {(NEW, (BASE_MS + i * 900_000) * 10**6, 10.0 + i) for i in range(8)}
        second = replay([dead], new, LIMITS, write)
        assert second.written == 0 and second.already_replayed == 8
        assert second.still_failing == {"unknown_meter": 1}  # tried again, still failing
        # Only what is asked for: the failing one is not an `unknown_meter` any more? It is.
        third = replay([dead], new, LIMITS, write, reasons=frozenset({"bad_json"}))
        assert third.letters == 0
    summary = summarize([dead])
    assert summary["by_reason"] == {"replayed": 8, "unknown_meter": 1}
    assert summary["pending"] == 1 and summary["replayed"] == 8
    by_meter = {(r["meter"], r["reason"]): r["rejections"] for r in summary["by_meter"]}
    assert by_meter == {(NEW, "replayed"): 8, ("E0002-NOPE", "unknown_meter"): 1}
    assert summary["by_gateway"][0]["gateway"] == "gw-02"


def test_replay_since_and_a_reason_that_changed(
    services: LocalServices, database: str, registries: tuple[Registry, Registry], tmp_path: Path
) -> None:
    """A letter that fails for another reason now is listed (and filtered) under that reason."""
    old, new = registries
    dead = tmp_path / "dl.jsonl"
    _letters(tmp_path, [(TOPIC, _msg({"meter": NEW, "value": 1.0, "unit": "kWh"}))], old)
    with support_client(services.influx_url, database) as client:
        write = _writer(client)
        future = replay([dead], new, LIMITS, write, since=4e9)  # 2096: nothing
        assert future.letters == 0
        r = replay([dead], new, LIMITS, write)
        assert r.still_failing == {"unit_mismatch": 1}
        assert replay([dead], new, LIMITS, write,
                      reasons=frozenset({"unknown_meter"})).letters == 0  # fmt: skip
        assert replay([dead], new, LIMITS, write,
                      reasons=frozenset({"unit_mismatch"})).letters == 1  # fmt: skip
    assert summarize([dead])["by_reason"] == {"unit_mismatch": 1}


# -- the commands, with a running ingestor -------------------------------------------------


def _run(*args: str) -> dict[str, Any]:
    res = subprocess.run([GREENMON, *args, "--json"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def _wait_letters(dead: Path, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(list(read_letters(letter_files(dead)))) < n:
        assert time.monotonic() < deadline, f"fewer than {n} dead letters in {timeout} s"
        time.sleep(0.05)


def test_unknown_meter_letters_are_replayed_once_after_it_is_registered(
    services: LocalServices, database: str, tmp_path: Path
) -> None:
    registry = own_registry(tmp_path)
    runtime = tmp_path / "rt"
    common = ["--influx-url", services.influx_url, "--database", database,
              "--registry", str(registry), "--runtime-dir", str(runtime)]  # fmt: skip
    args = ingest_args(services.mqtt_url, services.influx_url, database, runtime,
                       "--client-id", database, registry=registry)  # fmt: skip
    rotate_often = {"GREENMON_INGEST__DEAD_LETTER_MAX_BYTES": "2048"}
    ing = IngestProc(args, runtime, env=rotate_often).start().wait_subscribed()
    pub = Publisher(services.mqtt_url, client_id="gw-" + database)
    n = 40
    want = set()
    try:
        for i in range(n):
            ts = BASE_MS + i * 900_000
            value = 1000.0 + i
            payload = _msg({"meter": NEW, "value": value}, {"meter": "E0002-EL-MAIN",
                           "value": float(i)}, ts=ts)  # fmt: skip
            pub.publish(i, TOPIC, payload)
            want.add((NEW, ts * 10**6, value))
            if i % 10 == 9:  # in four batches: a dead-letter flush (and rotation) each
                _wait_letters(runtime / "ingest" / database / "dead_letters.jsonl", i + 1)
        assert len(pub.acked) == n
    finally:
        pub.close()
    summary = ing.stop()
    assert summary["rejected_by_reason"] == {"unknown_meter": n}
    dead_dir = runtime / "ingest" / database
    assert len(list(dead_dir.glob("dead_letters-*.jsonl"))) >= 2  # it rotated
    assert not {r for r in stored(services.influx_url, database) if r[0] == NEW}

    listed = _run("ingest", "dead-letters", *common)
    assert listed["by_reason"] == {"unknown_meter": n}
    (gw,) = listed["by_gateway"]
    assert (gw["enterprise"], gw["gateway"], gw["rejections"]) == ("E0002", "gw-02", n)

    with (registry / "meters.csv").open("a") as fh:
        fh.write(NEW_ROW)
    dry = _run("ingest", "replay", *common, "--reason", "unknown_meter", "--dry-run")
    assert dry["written"] == n and dry["dry_run"]
    assert not {r for r in stored(services.influx_url, database) if r[0] == NEW}
    first = _run("ingest", "replay", *common, "--reason", "unknown_meter")
    assert first["written"] == n and first["written_by_meter"] == {NEW: n}
    assert len(first["files"]) >= 3  # the rotated files were replayed too
    assert {r for r in stored(services.influx_url, database) if r[0] == NEW} == want
    again = _run("ingest", "replay", *common)
    assert again["written"] == 0 and again["already_replayed"] == n
    listed = _run("ingest", "dead-letters", *common)
    assert listed["by_reason"] == {"replayed": n} and listed["pending"] == 0
    # Exactly once, in InfluxDB too: one point per (meter, time).
    with support_client(services.influx_url, database) as c:
        count = c.query(
            f"SELECT count(value) FROM {c.source('meter_reading')} WHERE meter = '{NEW}'"
        )
    assert count["count"].to_list() == [n]
