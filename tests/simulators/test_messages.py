"""Messages are byte-identical to the ingest codec's encoder and decode cleanly."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from greenmon.ingest.codec import encode_batch, encode_single, format_ts, topic_for
from greenmon.simulators.messages import float_text, rfc3339
from tests.simulators.conftest import Run
from tests.simulators.support import decode_messages


def _reencode(payload: str) -> bytes:
    doc = json.loads(payload)
    if "readings" in doc:
        return encode_batch(doc["gateway"], doc["ts"], doc["readings"])
    return encode_single(doc["meter"], doc["value"], doc["ts"], doc.get("unit"))


def test_payloads_are_byte_identical_to_the_codec(faulty_run: Run) -> None:
    msgs = faulty_run.planned.plan.messages.filter(pl.col("kind") != "malformed")
    assert msgs["kind"].n_unique() == 3  # live, catchup, duplicate
    forms = set()
    for topic, client, payload in msgs.select("topic", "client", "payload").iter_rows():
        assert _reencode(payload) == payload.encode("utf-8")
        doc = json.loads(payload)
        forms.add(("batch" if "readings" in doc else "single", type(doc["ts"]).__name__))
        enterprise = topic.split("/")[2]
        assert topic == topic_for(enterprise, client)
    assert forms == {("batch", "str"), ("batch", "int"), ("single", "str"), ("single", "int")}


def test_units_sent_registered_omitted_or_scaled(faulty_run: Run) -> None:
    sent = faulty_run.truth.filter(pl.col("sent"))
    units = set(sent["sent_unit"].unique().to_list())
    assert {None, "kWh", "MWh", "m3"} <= units


def test_every_valid_message_decodes_without_rejection(faulty_run: Run) -> None:
    plan = faulty_run.planned.plan
    got, reasons = decode_messages(plan.messages, faulty_run.registry)
    assert len(reasons) == plan.malformed.height
    expected = int(faulty_run.truth["publishes"].sum())
    assert got.height == expected


@given(st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000))
@settings(max_examples=300, deadline=None)
def test_rfc3339_matches_format_ts(ms: int) -> None:
    frame = pl.DataFrame({"ms": [ms, ms - ms % 1000]})
    out = frame.select(rfc3339(pl.col("ms"))).to_series().to_list()
    assert out == [format_ts(ms), format_ts(ms - ms % 1000)]


def test_float_text_matches_repr() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 10**10, 20_000)
    values = np.concatenate(
        [counts / 1.0, counts / 10.0, counts / 100.0, counts / 1000.0, counts / 1e5, [0.0, 1e15]]
    )
    text = float_text(pl.Series(values)).to_list()
    assert text == [repr(float(v)) for v in values]
    odd = pl.Series([1e-05, 1e16, math.nan, 0.5])
    assert float_text(odd).to_list() == ["1e-05", "1e+16", "nan", "0.5"]
