"""The dead-letter file: whole payloads, one line per message, rotation, reading back."""

from __future__ import annotations

import json
from pathlib import Path

from greenmon.ingest.codec import Rejection, RejectReason
from greenmon.ingest.deadletter import DeadLetterSink, letter_files, read_letters

TOPIC = "greenmon/v1/E0002/gw-02/readings"


def _rej(reason: RejectReason, meter: str | None = None, index: int | None = None) -> Rejection:
    return Rejection(reason, f"because {reason.value}", meter, index)


def test_one_line_per_message_with_the_whole_payload(tmp_path: Path) -> None:
    sink = DeadLetterSink(tmp_path / "dl.jsonl")
    payload = json.dumps({"ts": 1, "readings": [{"meter": "X", "value": i} for i in range(100)]})
    assert len(payload) > 1000  # longer than the old 200-byte excerpt
    sink.add(TOPIC, payload.encode(), [_rej(RejectReason.UNKNOWN_METER, "X", i) for i in range(3)])
    sink.close()
    lines = (tmp_path / "dl.jsonl").read_text().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["v"] == 2 and doc["payload"] == payload and doc["topic"] == TOPIC
    assert [r["index"] for r in doc["rejections"]] == [0, 1, 2]
    assert sink.counts == {"unknown_meter": 3}
    (letter,) = read_letters([tmp_path / "dl.jsonl"])
    assert letter.payload == payload.encode() and letter.id == doc["id"]
    assert (letter.enterprise, letter.gateway) == ("E0002", "gw-02")
    assert [r.meter for r in letter.rejections] == ["X", "X", "X"]


def test_a_payload_that_is_not_utf8_comes_back_byte_for_byte(tmp_path: Path) -> None:
    sink = DeadLetterSink(tmp_path / "dl.jsonl")
    raw = b'{"meter": "\xff\xfe", "value": 1}'
    sink.add(TOPIC, raw, [_rej(RejectReason.BAD_JSON)])
    sink.close()
    assert "payload_b64" in json.loads((tmp_path / "dl.jsonl").read_text())
    (letter,) = read_letters([tmp_path / "dl.jsonl"])
    assert letter.payload == raw


def test_rotation_by_size_keeps_every_letter_readable(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    sink = DeadLetterSink(path, max_bytes=2048)
    for i in range(60):
        sink.add(TOPIC, json.dumps({"meter": f"M{i}", "value": i}).encode(),
                 [_rej(RejectReason.UNKNOWN_METER, f"M{i}")])  # fmt: skip
        sink.flush()
    sink.close()
    files = letter_files(path)
    assert sink.rotations >= 3 and len(files) == sink.rotations + 1
    assert files[-1] == path and all(f.name.startswith("dl-") for f in files[:-1])
    assert all(f.stat().st_size >= 2048 for f in files[:-1])  # rotated once past the limit
    meters = [r.meter for letter in read_letters(files) for r in letter.rejections]
    assert meters == [f"M{i}" for i in range(60)]  # all of them, oldest first


def test_a_line_being_written_is_skipped_and_old_format_lines_are_read(tmp_path: Path) -> None:
    path = tmp_path / "dl.jsonl"
    short = '{"meter":"E0002-NEW","value":1.5,"ts":1748736000000}'
    long_excerpt = "x" * 200 + "…"
    old = [
        {"time": 1.0, "reason": "unknown_meter", "detail": "d", "meter": "E0002-NEW",
         "index": None, "topic": TOPIC, "payload": short},
        {"time": 2.0, "reason": "bad_json", "detail": "d", "meter": None, "index": None,
         "topic": TOPIC, "payload": long_excerpt},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in old) + '{"v": 2')
    letters = list(read_letters([path]))
    assert len(letters) == 2
    assert letters[0].payload == short.encode() and letters[0].rejections[0].meter == "E0002-NEW"
    assert letters[1].payload is None  # only an excerpt survived: not replayable
    assert letters[0].id != letters[1].id and letters[0].id.startswith("v1-")
