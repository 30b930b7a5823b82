"""Faults on demand: each appears exactly at its configured rate, is recorded in the truth,
and behaves as the aggregator's contract says."""

from __future__ import annotations

import json

import polars as pl
import pytest

from greenmon.ingest.codec import decode
from greenmon.simulators.errors import FaultSpecError
from greenmon.simulators.faults import (
    DEMO_RATES,
    FAULT_KINDS,
    MALFORMED_KINDS,
    FaultSpec,
    parse_faults,
)
from greenmon.simulators.messages import EXPECTED_REASON
from tests.simulators.conftest import Run
from tests.simulators.support import FAR_FUTURE_MS, decode_messages


def has(kind: str) -> pl.Expr:
    return pl.col("faults").list.contains(kind)


def test_parse_faults() -> None:
    spec = parse_faults(" spike=0.01 , gap_lost=0.2,malformed=0.1")
    assert spec.rate("spike") == 0.01 and spec.rate("gap_lost") == 0.2
    assert spec.rate("reset") == 0 and str(spec) == "spike=0.01,gap_lost=0.2,malformed=0.1"
    assert parse_faults("none").rates == {} and parse_faults(None).rates == {}
    assert dict(parse_faults("demo").rates) == dict(DEMO_RATES)
    assert set(parse_faults("all=0.5").rates) == {*FAULT_KINDS, "malformed"}
    assert parse_faults("demo,spike=0").rate("spike") == 0
    for bad, message in (
        ("spike", "expected name=rate"),
        ("spike=x", "not a number"),
        ("spike=1.5", "between 0 and 1"),
        ("spikes=0.1", "unknown fault"),
    ):
        with pytest.raises(FaultSpecError, match=message):
            parse_faults(bad)
    counts = FaultSpec({"malformed": 0.05, "nan": 0.01}).malformed_counts(200)
    assert counts == {
        "bad_json": 2,
        "unknown_meter": 2,
        "wrong_enterprise": 2,
        "nan": 4,
        "wrong_unit": 2,
    }


def test_every_fault_appears_at_its_configured_rate(faulty_run: Run) -> None:
    run, t = faulty_run, faulty_run.truth
    spec, n = run.spec.faults, run.planned.grid.n
    n_reg = run.fleet.meters.filter(pl.col("kind") == "register").height
    n_gw = run.fleet.gateways.height
    msgs = run.planned.plan.messages
    live = msgs.filter(pl.col("kind") == "live").height
    expected = {
        "rollover": round(spec.rate("rollover") * n_reg),
        "reset": round(spec.rate("reset") * n_reg),
        "spike": round(spec.rate("spike") * n_reg * (n - 1)),
        "gap_lost": round(spec.rate("gap_lost") * n_gw * n),
        "gap_catchup": round(spec.rate("gap_catchup") * n_gw * n),
        "clock_skew": round(spec.rate("clock_skew") * n_gw),
        "duplicate": round(spec.rate("duplicate") * live),
        "out_of_order": round(spec.rate("out_of_order") * live),
        "disconnect": round(spec.rate("disconnect") * live),
    }
    assert all(v > 3 for v in expected.values()), expected
    got = {
        "rollover": t.filter(has("rollover")).height,
        "reset": t.filter(has("reset")).height,
        "spike": t.filter(has("spike")).height,
        "gap_lost": t.filter(has("gap_lost")).select("gateway_id", "end").unique().height,
        "gap_catchup": t.filter(has("gap_catchup")).select("gateway_id", "end").unique().height,
        "clock_skew": t.filter(has("clock_skew"))["gateway_id"].n_unique(),
        "duplicate": msgs.filter(pl.col("kind") == "duplicate").height,
        "out_of_order": t.filter(has("out_of_order"))["seq"].n_unique(),
        "disconnect": msgs.filter(pl.col("reconnect")).height,
    }
    assert got == expected
    assert t.filter(has("rollover"))["meter_id"].n_unique() == expected["rollover"]
    assert t.filter(has("duplicate"))["seq"].n_unique() == expected["duplicate"]
    assert t.filter(has("disconnect"))["seq"].n_unique() == expected["disconnect"]
    assert {k: v for k, v in run.planned.plan.counts.items() if k in expected} == expected
    total = round(spec.rate("malformed") * live)
    kinds = run.malformed["kind"].value_counts()
    assert dict(kinds.iter_rows()) == {
        k: total // 5 + (1 if i < total % 5 else 0) for i, k in enumerate(MALFORMED_KINDS)
    }
    assert msgs.filter(pl.col("kind") == "malformed").height == total


def test_malformed_messages_are_rejected_by_decode_with_the_recorded_reason(
    faulty_run: Run,
) -> None:
    for row in faulty_run.malformed.iter_rows(named=True):
        out = decode(row["topic"], row["payload"].encode(), faulty_run.registry, FAR_FUTURE_MS)
        assert out.readings == []
        assert [r.reason.value for r in out.rejections] == [row["reason"]], row
        assert row["reason"] == EXPECTED_REASON[row["kind"]].value


def test_rollover_wraps_once_from_close_below(faulty_run: Run) -> None:
    t = faulty_run.truth.join(faulty_run.fleet.meters.select("meter_id", "rollover"), on="meter_id")
    prev = pl.col("register").shift(1).over("meter_id")
    wraps = t.with_columns(prev.alias("prev")).filter(has("rollover"))
    assert wraps.height > 0
    for w in wraps.iter_rows(named=True):
        assert w["register"] < w["prev"]
        assert w["prev"] > 0.99 * w["rollover"]  # close below its rollover
        # after `rollover` comes 0: the wrap adds rollover + 1
        delta = w["register"] + w["rollover"] + 1 - w["prev"]
        assert delta * w["multiplier"] == pytest.approx(w["quantity"], rel=1e-12)


def test_reset_restarts_near_zero_and_keeps_the_true_quantity(faulty_run: Run) -> None:
    t = faulty_run.truth.with_columns(pl.col("register").shift(1).over("meter_id").alias("prev"))
    resets = t.filter(has("reset"))
    assert resets.height > 0
    for r in resets.iter_rows(named=True):
        assert r["register"] < r["prev"]
        assert r["register"] <= 5 + r["quantity"] / r["multiplier"]  # new meter: 0..5 + use
    # the interval after a reset counts normally from the new register
    after = t.filter(has("reset").shift(1).over("meter_id").fill_null(False))
    error = (after["register"] - after["prev"]) * after["multiplier"] - after["quantity"]
    assert after.height > 0 and float(error.abs().max()) < 1e-6  # type: ignore[arg-type]


def test_spike_is_one_wrong_reading(faulty_run: Run) -> None:
    t = faulty_run.truth
    spikes = t.filter(has("spike"))
    typical = (
        t.filter(pl.col("kind") == "register")
        .group_by("meter_id")
        .agg((pl.col("register").diff().mean()).alias("typ"))
    )
    s = spikes.join(typical, on="meter_id")
    scale = s["sent_unit"].replace_strict({"MWh": 1000.0, "t": 1000.0}, default=1.0)
    jump = s["sent_value"] * scale - s["register"]
    assert (jump >= 50 * s["typ"].clip(lower_bound=1)).all()
    # the next reading is the true register again
    nxt = t.with_columns(has("spike").shift(1).over("meter_id").fill_null(False).alias("after"))
    after = nxt.filter(pl.col("after"))
    assert after.height == spikes.height
    assert (after["sent_value"].is_not_null()).all()


def test_gaps_and_clock_skew_are_in_the_truth_and_the_messages(faulty_run: Run) -> None:
    t, msgs = faulty_run.truth, faulty_run.planned.plan.messages
    lost = t.filter(has("gap_lost"))
    assert lost.height > 0 and not lost["sent"].any() and lost["seq"].is_null().all()
    late = t.filter(has("gap_catchup"))
    assert late["sent"].all()
    kinds = late.join(msgs.select("seq", pl.col("kind").alias("mk")), on="seq")["mk"].unique()
    assert kinds.to_list() == ["catchup"]
    batch = msgs.filter((pl.col("kind") == "catchup") & pl.col("payload").str.contains("readings"))
    for payload in batch["payload"].to_list():
        assert all("ts" in r for r in json.loads(payload)["readings"])  # per-reading ts
    sent = t.filter(pl.col("sent"))
    offset = (sent["sent_ts"] - sent["end"]).dt.total_milliseconds()
    assert (offset == sent["skew_ms"]).all()
    skewed = sent.filter(has("clock_skew"))
    assert skewed.height > 0 and (skewed["skew_ms"] != 0).all()
    assert (sent.filter(~has("clock_skew"))["skew_ms"] == 0).all()
    assert skewed["skew_ms"].abs().max() <= 180_000  # type: ignore[operator]


def test_duplicates_disconnects_and_out_of_order_in_the_messages(faulty_run: Run) -> None:
    msgs = faulty_run.planned.plan.messages
    dups = msgs.filter(pl.col("kind") == "duplicate")
    originals = msgs.filter(pl.col("kind") == "live")
    assert dups.join(originals, on=["client", "topic", "payload"]).height == dups.height
    t = faulty_run.truth
    assert (t.filter(has("duplicate"))["publishes"] == 2).all()
    assert (t.filter(~has("duplicate") & pl.col("sent"))["publishes"] == 1).all()
    # a delayed message is published after a message of the same gateway with a later ts
    late = (
        t.filter(has("out_of_order"))
        .group_by("seq")
        .agg(pl.col("end").max(), pl.col("gateway_id").first())
    )
    on_time = t.filter(pl.col("sent") & ~has("out_of_order")).select(
        "gateway_id", "end", pl.col("seq").alias("other")
    )
    overtaken = late.join(on_time, on="gateway_id").filter(
        (pl.col("end_right") > pl.col("end")) & (pl.col("other") < pl.col("seq"))
    )
    assert overtaken["seq"].n_unique() == late.height
    assert msgs.filter(pl.col("reconnect"))["kind"].unique().to_list() == ["live"]


def test_what_was_sent_lets_the_aggregator_recover_the_truth(faulty_run: Run) -> None:
    """Decode every message with the real codec, then do what the aggregator is specified to
    do; wherever the data allows it, the energy equals the truth exactly."""
    run = faulty_run
    got, reasons = decode_messages(run.planned.plan.messages, run.registry)
    assert set(reasons) == {r.value for r in EXPECTED_REASON.values()}
    t = run.truth
    # every valid reading sent is decoded, with the device ts and value the truth records
    sent = t.filter(pl.col("sent")).with_columns(
        pl.col("sent_ts").dt.epoch("ms").alias("ts_ms"),
        (
            pl.col("sent_value")
            * pl.col("sent_unit")
            .fill_null(pl.col("unit"))
            .replace_strict({"MWh": 1000.0, "t": 1000.0}, default=1.0)
        ).alias("value_reg"),
    )
    uniq = got.unique(["meter_id", "ts_ms"], keep="first")
    assert uniq.height == sent.height
    both = sent.join(uniq, on=["meter_id", "ts_ms"], how="inner")
    assert both.height == sent.height
    assert ((both["value"] - both["value_reg"]).abs() <= 1e-9 * both["value_reg"].abs()).all()
    # registers: deltas between successive received readings (spikes quarantined) carry the
    # energy of every interval in between, across gaps, wraps, skew and disorder
    regs = (
        both.filter((pl.col("kind") == "register") & ~has("spike"))
        .join(run.fleet.meters.select("meter_id", "rollover"), on="meter_id")
        .sort("meter_id", "ts_ms")
    )
    spans = regs.with_columns(
        pl.col("value").shift(1).over("meter_id").alias("v0"),
        pl.col("end").shift(1).over("meter_id").alias("t0"),
    ).drop_nulls("v0")
    cum = t.with_columns(
        pl.col("quantity").cum_sum().over("meter_id").alias("cum"),
        has("reset").cast(pl.Int32).cum_sum().over("meter_id").alias("resets"),
    )
    spans = spans.join(
        cum.select(
            "meter_id",
            pl.col("end").alias("t0"),
            pl.col("cum").alias("c0"),
            pl.col("resets").alias("r0"),
        ),
        on=["meter_id", "t0"],
    ).join(
        cum.select("meter_id", "end", pl.col("cum").alias("c1"), pl.col("resets").alias("r1")),
        on=["meter_id", "end"],
    )
    clean = spans.filter(pl.col("r0") == pl.col("r1"))  # a reset interval is flagged instead
    assert clean.height > 0.95 * spans.height
    m = clean["rollover"] + 1
    delta = ((clean["value"] - clean["v0"]) % m) * clean["multiplier"]
    truth = clean["c1"] - clean["c0"]
    assert ((delta - truth).abs() <= 1e-6 * truth.abs().max()).all()  # type: ignore[operator]
    wide = clean.filter((pl.col("end") - pl.col("t0")).dt.total_minutes() > 15)
    assert wide.height > 0  # spans across lost gaps and spikes were exercised
    # interval meters: each reading is its own interval's quantity
    iv = both.filter(pl.col("kind") == "interval")
    assert iv.height > 0 and ((iv["value"] - iv["quantity"]).abs() < 1e-9).all()
