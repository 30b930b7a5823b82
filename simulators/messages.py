"""Messages: the exact MQTT traffic of a run (topic, payload, when, by which gateway).

This module owns turning faulted readings into the messages gateways publish, vectorised with
Polars (no per-reading Python loop), byte-identical to the ingest codec's encoder
(`greenmon.ingest.codec.encode_batch` / ``encode_single`` / ``format_ts`` / ``topic_for``):

- live readings: a batch gateway sends one message per reading time
  ``{"gateway": .., "ts": .., "readings": [{"meter": .., "value": .., "unit": ..}, ...]}``; a
  single-form gateway one ``{"meter": .., "value": .., "ts": .., "unit": ..}`` per reading;
  ``ts`` is the device time (true time + the gateway's clock skew) as RFC 3339 (+08:00) or
  epoch ms, by gateway; the unit is the registered one, omitted, or a convertible larger one
  (MWh for kWh, t for kg), by gateway; values are the register's whole display units or the
  interval meter's value;
- catch-up after a ``gap_catchup``: the missed readings in one message with per-reading ``ts``
  (single-form gateways: one message each), published when the gateway is back;
- message-level faults on live messages: ``duplicate`` (published twice), ``out_of_order``
  (held back past the gateway's next 1..4 reading times), ``disconnect`` (the gateway
  reconnects before it);
- ``malformed`` extras, each checked to be refused by the ingestor's ``decode`` with the
  reason recorded (bad_json -> bad_json, unknown_meter -> unknown_meter, wrong_enterprise ->
  wrong_enterprise, nan -> non_finite, wrong_unit -> unit_mismatch).

Every message gets a publication time in simulated time (``at_ms``: reading time + the
gateway's latency) and a global sequence number in publication order.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import polars as pl

from greenmon.ingest.codec import RejectReason, encode_batch, encode_single, format_ts, topic_for
from greenmon.simulators.errors import FaultSpecError
from greenmon.simulators.faults import BIT, MALFORMED_KINDS, Faulted, FaultSpec
from greenmon.simulators.fleet import Fleet
from greenmon.simulators.world import Grid

__all__ = [
    "EXPECTED_REASON",
    "MESSAGE_SCHEMA",
    "Plan",
    "build_messages",
    "float_text",
    "json_string",
    "rfc3339",
]

SCALED_UNIT: Final = {"kWh": ("MWh", 3), "kg": ("t", 3)}
WRONG_UNIT: Final = {"kWh": "m3", "Wh": "m3", "MWh": "m3", "m3": "kWh", "kg": "kWh", "t": "kWh"}
EXPECTED_REASON: Final = {
    "bad_json": RejectReason.BAD_JSON,
    "unknown_meter": RejectReason.UNKNOWN_METER,
    "wrong_enterprise": RejectReason.WRONG_ENTERPRISE,
    "nan": RejectReason.NON_FINITE,
    "wrong_unit": RejectReason.UNIT_MISMATCH,
}
CATCHUP_CHUNK: Final = 1000
STREAM_MESSAGES: Final = 31
MESSAGE_SCHEMA: Final = {
    "seq": pl.Int64,
    "at_ms": pl.Int64,
    "client": pl.String,
    "topic": pl.String,
    "payload": pl.String,
    "reconnect": pl.Boolean,
    "kind": pl.String,
}
_CST_MS: Final = 8 * 3_600_000


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def rfc3339(ms: pl.Expr) -> pl.Expr:
    """Epoch ms -> RFC 3339 at +08:00, exactly as `greenmon.ingest.codec.format_ts`."""
    local = (ms + _CST_MS).cast(pl.Datetime("ms")).dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = (
        pl.when(ms % 1000 != 0)
        .then(pl.lit(".") + (ms % 1000).cast(pl.String).str.zfill(3))
        .otherwise(pl.lit(""))
    )
    return pl.concat_str(local, frac, pl.lit("+08:00"))


def json_string(expr: pl.Expr, values: pl.Series) -> pl.Expr:
    """`expr` as a JSON string literal, as ``json.dumps(..., ensure_ascii=False)`` writes it:
    plain quoting when no value of `values` needs escaping (greenmon ids never do)."""
    if not values.str.contains(r'["\\\x00-\x1f]').any():
        return pl.concat_str(pl.lit('"'), expr, pl.lit('"'))
    return expr.map_elements(lambda v: json.dumps(v, ensure_ascii=False), return_dtype=pl.String)


def float_text(values: pl.Series) -> pl.Series:
    """Python's ``repr`` of each float (what ``json.dumps`` writes), vectorised when it can be:
    Polars prints the same shortest round-trip digits for 1e-4 <= |x| < 1e16 and 0."""
    v = values.cast(pl.Float64)
    a = v.abs()
    fast = ((a == 0) | ((a >= 1e-4) & (a < 1e16))).all() and v.is_finite().all()
    if fast:
        return v.cast(pl.String)
    return pl.Series(values.name, [repr(x) for x in v.to_list()], dtype=pl.String)


@dataclass(frozen=True)
class Plan:
    """Everything a run publishes, and how it maps back to readings.

    ``messages``: MESSAGE_SCHEMA, in publication order (``seq`` 0, 1, ...), ``at_ms`` in
    simulated time. ``readings``: the faulted readings plus ``sent_ts_ms``, ``sent_value``,
    ``sent_unit``, ``seq`` (first message carrying the reading, null if never sent) and
    ``publishes``. ``malformed``: the extra messages with their expected reject reason.
    ``counts``: placed faults per kind (malformed per kind too).
    """

    messages: pl.DataFrame
    readings: pl.DataFrame
    malformed: pl.DataFrame
    counts: dict[str, int]
    live_messages: int


def build_messages(
    fleet: Fleet,
    faulted: Faulted,
    grid: Grid,
    spec: FaultSpec,
    seed: int,
    *,
    prefix: str = "greenmon/v1",
) -> Plan:
    """Turn faulted readings into the run's messages (see the module docstring)."""
    step_ms = grid.step_s * 1000
    gws = fleet.gateways.with_row_index("gateway").with_columns(
        pl.col("gateway").cast(pl.Int32),
        pl.Series("skew_ms", faulted.skew_ms, dtype=pl.Int64),
        pl.concat_str(
            pl.lit(prefix + "/"), "enterprise_id", pl.lit("/"), "gateway_id", pl.lit("/readings")
        ).alias("topic"),
    )
    meters = fleet.meters.select(
        pl.int_range(pl.len(), dtype=pl.Int32).alias("row"), "meter_id", "unit"
    ).with_columns(json_string(pl.col("meter_id"), fleet.meters["meter_id"]).alias("meter_json"))
    gws = gws.with_columns(
        json_string(pl.col("gateway_id"), fleet.gateways["gateway_id"]).alias("gateway_json")
    )
    r = (
        faulted.readings.join(meters, on="row", how="left")
        .join(
            gws.select(
                "gateway", "payload_form", "ts_format", "unit_mode", "latency_ms", "skew_ms"
            ),
            on="gateway",
            how="left",
        )
        .with_columns((pl.col("end_ms") + pl.col("skew_ms")).alias("ts_ms"))
    )
    scaled = (pl.col("unit_mode") == "scaled") & pl.col("unit").is_in(list(SCALED_UNIT))
    r = r.with_columns(
        pl.when(scaled)
        .then(
            pl.col("unit").replace_strict({k: v[0] for k, v in SCALED_UNIT.items()}, default=None)
        )
        .when(pl.col("unit_mode") == "omitted")
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("unit"))
        .alias("sent_unit"),
        (pl.col("decimals").cast(pl.Int64) + pl.when(scaled).then(3).otherwise(0)).alias("exp"),
    )
    r = r.with_columns(
        (pl.col("units").cast(pl.Float64) / pl.lit(10.0).pow(pl.col("exp"))).alias("sent_value")
    )
    value_text = float_text(r["sent_value"])
    ts_text = r.select(
        pl.when(pl.col("ts_format") == "epoch_ms")
        .then(pl.col("ts_ms").cast(pl.String))
        .otherwise(pl.concat_str(pl.lit('"'), rfc3339(pl.col("ts_ms")), pl.lit('"')))
    ).to_series()
    unit_text = pl.concat_str(pl.lit(',"unit":"'), pl.col("sent_unit"), pl.lit('"')).fill_null("")
    r = r.with_columns(value_text.alias("value_text"), ts_text.alias("ts_text"))
    single = pl.col("payload_form") == "single"
    catchup = pl.col("status") == "catchup"
    r = r.with_columns(
        pl.when(single)
        .then(
            pl.concat_str(
                pl.lit('{"meter":'),
                "meter_json",
                pl.lit(',"value":'),
                "value_text",
                pl.lit(',"ts":'),
                "ts_text",
                unit_text,
                pl.lit("}"),
            )
        )
        .when(catchup)
        .then(
            pl.concat_str(
                pl.lit('{"meter":'),
                "meter_json",
                pl.lit(',"value":'),
                "value_text",
                unit_text,
                pl.lit(',"ts":'),
                "ts_text",
                pl.lit("}"),
            )
        )
        .otherwise(
            pl.concat_str(
                pl.lit('{"meter":'),
                "meter_json",
                pl.lit(',"value":'),
                "value_text",
                unit_text,
                pl.lit("}"),
            )
        )
        .alias("json"),
        # the step interval holding the reading time (for gaps)
        ((pl.col("end_ms") - grid.start_ms + step_ms - 1) // step_ms).cast(pl.Int32).alias("step"),
    )

    # -- group readings into messages ---------------------------------------------------------
    live = r.filter(pl.col("status") == "live")
    gap_steps = (
        faulted.gaps.filter(pl.col("kind") == "gap_catchup")
        .with_row_index("gap")
        .with_columns(pl.int_ranges("a", pl.col("b") + 1).alias("step"))
        .explode("step")
        .select(pl.col("gap").cast(pl.Int64), "gateway", pl.col("step").cast(pl.Int32), "b")
    )
    late = (
        r.filter(pl.col("status") == "catchup")
        .join(gap_steps, on=["gateway", "step"], how="left")
        .sort("gap", "end_ms", "row")
    )
    # message key: live batch (gateway, end); live single (row, k); catch-up (gap, chunk)
    live = live.with_columns(
        pl.when(single)
        .then(
            pl.struct(
                pl.lit(1).alias("t"),
                pl.col("row").alias("a"),
                pl.col("k").cast(pl.Int64).alias("b"),
            )
        )
        .otherwise(
            pl.struct(
                pl.lit(0).alias("t"), pl.col("gateway").alias("a"), pl.col("end_ms").alias("b")
            )
        )
        .alias("key"),
        (pl.col("end_ms") + pl.col("latency_ms")).alias("at_ms"),
    )
    late = late.with_columns(
        pl.when(single)
        .then(
            pl.struct(
                pl.lit(3).alias("t"),
                pl.col("row").alias("a"),
                pl.col("k").cast(pl.Int64).alias("b"),
            )
        )
        .otherwise(
            pl.struct(
                pl.lit(2).alias("t"),
                pl.col("gap").cast(pl.Int32).alias("a"),
                (pl.int_range(pl.len()).over("gap") // CATCHUP_CHUNK).cast(pl.Int64).alias("b"),
            )
        )
        .alias("key"),
        (
            grid.start_ms + (pl.col("b") + 1).cast(pl.Int64) * step_ms + pl.col("latency_ms") // 2
        ).alias("at_ms"),
    ).drop("gap", "b")
    both = pl.concat([live, late], how="diagonal_relaxed")
    msgs = (
        both.group_by("key", maintain_order=True)
        .agg(
            pl.col("gateway").first(),
            pl.col("status").first().alias("kind"),
            pl.col("at_ms").first(),
            pl.col("payload_form").first(),
            pl.col("ts_format").first(),
            pl.col("skew_ms").first(),
            pl.col("ts_text").first(),
            pl.col("json").str.join(","),
            pl.len().alias("n"),
            pl.col("end_ms").max(),
        )
        .sort("key")
        .with_row_index("msg")
        .with_columns(pl.col("msg").cast(pl.Int64))
    )
    rng = _rng(seed, STREAM_MESSAGES, 1)
    jitter = rng.integers(0, 1000, msgs.height)
    msgs = msgs.with_columns((pl.col("at_ms") + pl.Series(jitter, dtype=pl.Int64)).alias("at_ms"))
    gw_info = gws.select("gateway", "gateway_id", "gateway_json", "enterprise_id", "topic")
    msgs = msgs.join(gw_info, on="gateway", how="left")
    device_now = pl.col("at_ms") + pl.col("skew_ms")
    msg_ts = (
        pl.when(pl.col("kind") == "live")
        .then(pl.col("ts_text"))
        .when(pl.col("ts_format") == "epoch_ms")
        .then(device_now.cast(pl.String))
        .otherwise(pl.concat_str(pl.lit('"'), rfc3339(device_now), pl.lit('"')))
    )
    msgs = msgs.with_columns(
        pl.when(pl.col("payload_form") == "single")
        .then(pl.col("json"))
        .otherwise(
            pl.concat_str(
                pl.lit('{"gateway":'),
                "gateway_json",
                pl.lit(',"ts":'),
                msg_ts,
                pl.lit(',"readings":['),
                "json",
                pl.lit("]}"),
            )
        )
        .alias("payload")
    )

    # -- message-level faults on live messages --------------------------------------------------
    live_ids = msgs.filter(pl.col("kind") == "live")["msg"].to_numpy()
    n_live = int(live_ids.size)
    counts: dict[str, int] = dict(faulted.counts)

    # a delayed message must be overtaken: only messages with a later live reading time of
    # the same gateway qualify, delayed past that time by 0..3 more intervals
    ends = (
        msgs.filter(pl.col("kind") == "live")
        .select("gateway", "end_ms")
        .unique()
        .sort("gateway", "end_ms")
        .with_columns(pl.col("end_ms").shift(-1).over("gateway").alias("next_end"))
    )
    overtakable = (
        msgs.filter(pl.col("kind") == "live")
        .join(ends, on=["gateway", "end_ms"])
        .filter(pl.col("next_end").is_not_null())
        .sort("msg")
    )

    def choose(kind: str, stream: int, among: np.ndarray) -> np.ndarray:
        k = round(spec.rate(kind) * n_live)
        counts[kind] = k
        if k > among.size:
            raise FaultSpecError(f"cannot place {k} {kind} faults: only {among.size} messages fit")
        if k == 0:
            return np.array([], dtype=np.int64)
        return np.sort(_rng(seed, STREAM_MESSAGES, stream).choice(among, k, replace=False))

    delayed = choose("out_of_order", 2, overtakable["msg"].to_numpy())
    duplicated = choose("duplicate", 3, live_ids)
    reconnect = choose("disconnect", 4, live_ids)
    rng = _rng(seed, STREAM_MESSAGES, 5)
    gap_to_next = (
        overtakable.filter(pl.col("msg").is_in(delayed.tolist()))
        .sort("msg")
        .select(pl.col("next_end") - pl.col("end_ms"))
        .to_series()
        .to_numpy()
    )
    delay = pl.DataFrame(
        {
            "msg": delayed,
            "delay": gap_to_next
            + rng.integers(0, 4, delayed.size) * step_ms
            + 1000
            + rng.integers(0, 1000, delayed.size),
        },
        schema={"msg": pl.Int64, "delay": pl.Int64},
    )
    msgs = (
        msgs.join(delay, on="msg", how="left")
        .with_columns(
            (pl.col("at_ms") + pl.col("delay").fill_null(0)).alias("at_ms"),
            pl.col("msg").is_in(reconnect.tolist()).alias("reconnect"),
            (
                pl.when(pl.col("msg").is_in(delayed.tolist()))
                .then(BIT["out_of_order"])
                .otherwise(0)
                | pl.when(pl.col("msg").is_in(duplicated.tolist()))
                .then(BIT["duplicate"])
                .otherwise(0)
                | pl.when(pl.col("msg").is_in(reconnect.tolist()))
                .then(BIT["disconnect"])
                .otherwise(0)
            ).alias("msg_flags"),
        )
        .drop("delay")
    )
    rng = _rng(seed, STREAM_MESSAGES, 6)
    copies = (
        msgs.filter(pl.col("msg").is_in(duplicated.tolist()))
        .sort("msg")
        .with_columns(
            (
                pl.col("at_ms")
                + pl.Series(rng.integers(50, 30_000, duplicated.size), dtype=pl.Int64)
            ).alias("at_ms"),
            pl.lit("duplicate").alias("kind"),
            pl.lit(False).alias("reconnect"),
        )
    )
    malformed = _malformed(fleet, r, msgs, spec, seed, prefix, n_live, counts)
    out = pl.concat(
        [
            msgs.select(
                "msg", "gateway", "at_ms", "gateway_id", "topic", "payload", "reconnect", "kind"
            ).with_columns(pl.lit(0).alias("copy")),
            copies.select(
                "msg", "gateway", "at_ms", "gateway_id", "topic", "payload", "reconnect", "kind"
            ).with_columns(pl.lit(1).alias("copy")),
            malformed.select(
                "msg", "gateway", "at_ms", "gateway_id", "topic", "payload"
            ).with_columns(
                pl.lit(False).alias("reconnect"),
                pl.lit("malformed").alias("kind"),
                pl.lit(2).alias("copy"),
            ),
        ],
        how="vertical_relaxed",
    ).sort("at_ms", "gateway", "copy", "msg")
    out = out.with_row_index("seq").with_columns(pl.col("seq").cast(pl.Int64))
    messages = out.select(
        "seq",
        "at_ms",
        pl.col("gateway_id").alias("client"),
        "topic",
        "payload",
        "reconnect",
        "kind",
    )
    first_seq = out.filter(pl.col("copy") == 0).select("msg", "seq")

    # -- back to readings ------------------------------------------------------------------
    links = (
        both.select("row", "k", "key")
        .join(msgs.select("key", "msg", "msg_flags"), on="key", how="left")
        .join(first_seq, on="msg", how="left")
    )
    readings = (
        r.join(links.drop("key"), on=["row", "k"], how="left")
        .with_columns(
            (pl.col("flags") | pl.col("msg_flags").fill_null(0)).alias("flags"),
            pl.when(pl.col("msg").is_null())
            .then(0)
            .when((pl.col("msg_flags").fill_null(0) & BIT["duplicate"]) > 0)
            .then(2)
            .otherwise(1)
            .cast(pl.Int32)
            .alias("publishes"),
        )
        .with_columns(
            pl.when(pl.col("publishes") > 0).then(pl.col("ts_ms")).alias("sent_ts_ms"),
            pl.when(pl.col("publishes") > 0).then(pl.col("sent_value")).alias("sent_value"),
            pl.when(pl.col("publishes") > 0).then(pl.col("sent_unit")).alias("sent_unit"),
        )
        .select(
            "row",
            "k",
            "gateway",
            "start_ms",
            "end_ms",
            "quantity",
            "register",
            "units",
            "decimals",
            "status",
            "flags",
            "skew_ms",
            "sent_ts_ms",
            "sent_value",
            "sent_unit",
            "seq",
            "publishes",
        )
        .sort("row", "k")
    )
    malformed_out = malformed.join(
        out.select("msg", "seq", pl.col("copy")).filter(pl.col("copy") == 2), on="msg"
    ).drop("copy")
    return Plan(
        messages=messages,
        readings=readings,
        malformed=malformed_out.select(
            "seq",
            "at_ms",
            "gateway_id",
            "enterprise_id",
            "kind",
            "topic",
            "payload",
            "reason",
            "meter_id",
            "ts_ms",
        ).sort("seq"),
        counts=counts,
        live_messages=n_live,
    )


def _malformed(
    fleet: Fleet,
    r: pl.DataFrame,
    msgs: pl.DataFrame,
    spec: FaultSpec,
    seed: int,
    prefix: str,
    n_live: int,
    counts: dict[str, int],
) -> pl.DataFrame:
    """The extra malformed messages (a few per thousand: built one by one with the codec)."""
    wanted = spec.malformed_counts(n_live)
    counts.update(wanted)
    total = sum(wanted.values())
    schema = {
        "msg": pl.Int64,
        "gateway": pl.Int32,
        "at_ms": pl.Int64,
        "gateway_id": pl.String,
        "enterprise_id": pl.String,
        "kind": pl.String,
        "topic": pl.String,
        "payload": pl.String,
        "reason": pl.String,
        "meter_id": pl.String,
        "ts_ms": pl.Int64,
    }
    if total == 0:
        return pl.DataFrame(schema=schema)
    live = msgs.filter(pl.col("kind") == "live")
    rng = _rng(seed, STREAM_MESSAGES, 7)
    base_pos = rng.choice(live.height, total, replace=True)
    base = live[base_pos.tolist()].select("msg", "gateway", "at_ms", "gateway_id", "enterprise_id")
    first = (
        r.filter(pl.col("status") == "live")
        .with_columns(
            pl.when(pl.col("payload_form") == "single")
            .then(
                pl.struct(
                    pl.lit(1).alias("t"),
                    pl.col("row").alias("a"),
                    pl.col("k").cast(pl.Int64).alias("b"),
                )
            )
            .otherwise(
                pl.struct(
                    pl.lit(0).alias("t"), pl.col("gateway").alias("a"), pl.col("end_ms").alias("b")
                )
            )
            .alias("key")
        )
        .join(msgs.select("key", "msg"), on="key")
        .group_by("msg")
        .agg(pl.all().sort_by("row").first())
    )
    base = base.join(
        first.select("msg", "meter_id", "unit", "sent_value", "ts_ms", "ts_format", "payload_form"),
        on="msg",
        how="left",
    )
    known = set(fleet.meters["meter_id"].to_list())
    enterprises = fleet.enterprises["enterprise_id"].to_list()
    kinds = [k for k in MALFORMED_KINDS for _ in range(wanted[k])]
    rows: list[dict[str, Any]] = []
    for i, (kind, b) in enumerate(zip(kinds, base.iter_rows(named=True), strict=True)):
        meter, value, unit = str(b["meter_id"]), float(b["sent_value"]), str(b["unit"])
        ts: str | int = (
            int(b["ts_ms"]) if b["ts_format"] == "epoch_ms" else format_ts(int(b["ts_ms"]))
        )
        owner = str(b["enterprise_id"])
        topic = topic_for(owner, str(b["gateway_id"]), prefix)
        sent_unit: str | None = None
        if kind == "unknown_meter":
            meter = f"{meter}-X{int(rng.integers(1, 100))}"
            while meter in known:
                meter += "X"
        elif kind == "wrong_enterprise":
            others = [e for e in enterprises if e != owner]
            other = others[int(rng.integers(len(others)))] if others else owner + "X"
            topic = topic_for(other, str(b["gateway_id"]), prefix)
        elif kind == "nan":
            value = math.nan
        elif kind == "wrong_unit":
            sent_unit = WRONG_UNIT[unit]
        if b["payload_form"] == "single":
            payload = encode_single(meter, value, ts, sent_unit)
        else:
            reading: dict[str, Any] = {"meter": meter, "value": value}
            if sent_unit is not None:
                reading["unit"] = sent_unit
            payload = encode_batch(str(b["gateway_id"]), ts, [reading])
        if kind == "bad_json":
            payload = payload[: int(rng.integers(1, len(payload)))]
        rows.append(
            {
                "msg": -(i + 1),
                "gateway": b["gateway"],
                "at_ms": int(b["at_ms"]) + int(rng.integers(100, 5000)),
                "gateway_id": b["gateway_id"],
                "enterprise_id": owner,
                "kind": kind,
                "topic": topic,
                "payload": payload.decode("utf-8"),
                "reason": EXPECTED_REASON[kind].value,
                "meter_id": meter if kind != "bad_json" else str(b["meter_id"]),
                "ts_ms": int(b["ts_ms"]),
            }
        )
    return pl.DataFrame(rows, schema=schema)
