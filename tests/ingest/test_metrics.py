"""The `greenmon_ingest` self-monitoring point: counters plus one field per reject reason."""

from __future__ import annotations

from greenmon.ingest.codec import RejectReason
from greenmon.ingest.metrics import REJECT_REASONS, IngestMetrics


def _fields(line: str) -> dict[str, str]:
    _, fields, _ = line.split(" ")
    return dict(item.split("=", 1) for item in fields.split(","))


def test_stats_line_has_every_reason_even_at_zero() -> None:
    m = IngestMetrics()
    m.messages.inc(7)
    m.rejected.labels(RejectReason.BAD_JSON.value).inc(3)
    m.rejected.labels("influx_rejected").inc()
    line = m.stats_line("ingest-1", 1_748_707_200_000_000_000)
    assert line.startswith("greenmon_ingest,client_id=ingest-1 ")
    fields = _fields(line)
    assert fields["messages"] == "7i"
    assert fields["rejected"] == "4i"
    assert fields["rejected_bad_json"] == "3i"
    assert fields["rejected_influx_rejected"] == "1i"
    assert fields["rejected_unknown_meter"] == "0i"
    assert {f"rejected_{r}" for r in REJECT_REASONS} <= set(fields)
    assert set(REJECT_REASONS) >= {r.value for r in RejectReason}
