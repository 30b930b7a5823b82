"""`greenmon bench simulate`: how fast the simulators generate and publish.

This module owns the benchmark figures: for a fleet of ``enterprises`` (1,000 by default, about
9,600 meters) over one simulated day at 15 minutes it times, separately, fleet generation,
planning the run (world + faults + messages, the part that is pure computation), writing the
out-file and the truth, and publishing everything at QoS 1 to a broker, and reports messages
and readings per second of each step. Without a broker URL it starts its own Mosquitto on a
free loopback port in a scratch directory (nothing of the user's is touched) and stops it.

The publish time is printed beside its goal (issue 13): a 1,000-enterprise day in at most
`PUBLISH_GOAL_S` seconds, scaled to the fleet and days asked for, and, on the private
Mosquitto, beside what the broker moves in the same run with its own C clients (`c_limit`:
the same payloads through ``mosquitto_pub -l`` at QoS 1, one process per publisher process,
until a QoS 1 ``mosquitto_sub`` has received every one): the broker's ceiling here, which
the Python publisher is measured against. The 1-minute load average before publishing is
printed too: the machine is shared, and the figures move with it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from greenmon.deploy.local import LocalServices, find_binary
from greenmon.ingest.bench import BenchError, Publisher, forget_session
from greenmon.simulators.errors import SimulatorError
from greenmon.simulators.faults import FaultSpec
from greenmon.simulators.fleet import generate_fleet
from greenmon.simulators.gateways import PublishOptions, default_processes, publish
from greenmon.simulators.outfile import write_out_file
from greenmon.simulators.runner import DEFAULT_START, RunSpec, parse_start, plan_run
from greenmon.simulators.truth import malformed_frame, truth_frame, write_truth

__all__ = ["PUBLISH_GOAL_S", "run_bench"]

#: Goal: one simulated day of 1,000 enterprises at 15 minutes published within this many seconds.
PUBLISH_GOAL_S = 10.0


def run_bench(
    *,
    enterprises: int = 1000,
    days: float = 1.0,
    step_s: int = 900,
    seed: int = 0,
    faults: FaultSpec | None = None,
    publish_to_broker: bool = True,
    mqtt_url: str | None = None,
    concurrency: int = 256,
    processes: int | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (publishing to `mqtt_url`, or to a private Mosquitto when it is None,
    unless `publish_to_broker` is false). Returns the figures."""
    note = say or (lambda _text: None)
    figures: dict[str, Any] = {"enterprises": enterprises, "days": days, "interval_s": step_s}
    t = time.perf_counter()
    fleet = generate_fleet(enterprises, seed)
    figures["fleet_s"] = round(time.perf_counter() - t, 3)
    figures["meters"] = fleet.meters.height
    figures["gateways"] = fleet.gateways.height
    note(f"fleet: {fleet.meters.height} meters in {figures['fleet_s']} s")
    spec = RunSpec(
        start_ms=parse_start(DEFAULT_START, step_s),
        days=days,
        step_s=step_s,
        seed=seed,
        faults=faults or FaultSpec(),
    )
    planned = plan_run(fleet, spec)
    plan = planned.plan
    readings = int(plan.readings["publishes"].sum())
    figures.update(
        messages=plan.messages.height,
        readings=readings,
        plan_s=round(planned.seconds, 3),
        plan_messages_per_s=round(plan.messages.height / planned.seconds),
        plan_readings_per_s=round(readings / planned.seconds),
    )
    note(f"plan: {plan.messages.height} messages in {figures['plan_s']} s")
    with tempfile.TemporaryDirectory(prefix="greenmon-bench-") as tmp:
        t = time.perf_counter()
        write_out_file(plan.messages, Path(tmp) / "messages.jsonl")
        figures["out_file_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        write_truth(truth_frame(fleet, plan), malformed_frame(plan), Path(tmp) / "truth.parquet")
        figures["truth_s"] = round(time.perf_counter() - t, 3)
        if not publish_to_broker:
            return figures
        with _broker(mqtt_url, Path(tmp) / "services") as url:
            note(f"publishing {plan.messages.height} messages to {url}")
            opts = PublishOptions(
                mqtt_url=url, concurrency=concurrency, processes=processes or default_processes()
            )
            load = round(os.getloadavg()[0], 2)
            result = publish(plan.messages, opts)
            limit_s = None
            if mqtt_url is None:  # the broker's own ceiling, on the same broker, same run
                note("the same payloads through mosquitto_pub -> mosquitto_sub (C, QoS 1)")
                limit_s = c_limit(url, plan.messages, opts.processes, Path(tmp))
        # the goal, scaled to the fleet and the days published (at 15 minutes, per reading)
        goal = PUBLISH_GOAL_S * days * enterprises / 1000 * 900 / step_s
        figures.update(
            mqtt_url=url if mqtt_url else "private Mosquitto (scratch directory)",
            load_average_1m=load,
            publish_processes=opts.processes,
            connects=result.connects,
            published=result.published,
            publish_s=round(result.seconds, 3),
            publish_goal_s=round(goal, 3),
            publish_within_goal=result.seconds <= goal,
            publish_messages_per_s=round(result.rate),
            publish_readings_per_s=round(readings / result.seconds) if result.seconds else 0,
        )
        if limit_s is not None:
            figures.update(
                c_limit_s=round(limit_s, 3),
                c_limit_messages_per_s=round(plan.messages.height / limit_s),
                publish_vs_c_limit=round(result.seconds / limit_s, 2),
            )
    return figures


@contextlib.contextmanager
def _broker(mqtt_url: str | None, scratch: Path) -> Iterator[str]:
    """The given broker, or a private Mosquitto started (and stopped) in `scratch`."""
    if mqtt_url is not None:
        yield mqtt_url
        return
    services = LocalServices(scratch)
    services.runtime_dir.mkdir(parents=True, exist_ok=True)
    services.start("mosquitto")
    try:
        yield services.mqtt_url
    finally:
        services.stop("mosquitto")


def c_limit(mqtt_url: str, messages: pl.DataFrame, processes: int, scratch: Path) -> float:
    """Seconds for Mosquitto's C clients to move `messages`' payloads through the broker at
    `mqtt_url` at QoS 1: `processes` ``mosquitto_pub -l`` (each with its share of the lines,
    one topic each) into one ``mosquitto_sub`` subscribed at QoS 1, from the first line fed
    until the subscriber has every message."""
    payloads = messages.get_column("payload")
    if payloads.str.contains("\n", literal=True).any():
        raise SimulatorError("a payload contains a newline: mosquitto_pub -l sends lines")
    port = str(mqtt_url.rsplit(":", 1)[1])
    common = ("-h", "127.0.0.1", "-p", port, "-q", "1")
    parts = max(1, processes)
    files = []
    for k in range(parts):
        path = scratch / f"limit-{k}.txt"
        path.write_text("".join(p + "\n" for p in payloads.gather_every(parts, k)), "utf-8")
        files.append(path)
    sub_id = "greenmon-bench-limit-sub"
    session = (*common, "-t", "greenmon-bench/limit/#", "-i", sub_id, "-c", "-V", "mqttv5")
    # the session first (-E: exit once subscribed), so no message is published before it
    subprocess.run([find_binary("mosquitto_sub"), *session, "-x", "600", "-E"], check=True,
                   timeout=30, stdout=subprocess.DEVNULL)  # fmt: skip
    sub = subprocess.Popen(
        [find_binary("mosquitto_sub"), *session, "-x", "600", "-C", str(len(payloads))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pub_cmd = [find_binary("mosquitto_pub"), *common, "-l", "-M", "100", "--quiet"]
    pubs: list[Publisher] = []
    try:
        try:  # each connected before the clock starts (start-up is not measured)
            for k, path in enumerate(files):
                topic = ("-t", f"greenmon-bench/limit/{k}", "-i", f"greenmon-bench-limit-pub-{k}")
                pubs.append(Publisher([*pub_cmd, *topic], path))
        except BenchError as exc:
            raise SimulatorError(str(exc)) from exc
        started = time.perf_counter()
        for pub in pubs:
            pub.start()
        try:
            _, err = sub.communicate(timeout=600)
        except subprocess.TimeoutExpired as exc:
            raise SimulatorError("mosquitto_sub did not receive every message in 600 s") from exc
        elapsed = time.perf_counter() - started
        if sub.returncode:
            raise SimulatorError(f"mosquitto_sub failed: {err.decode(errors='replace')}")
        return elapsed
    finally:
        for pub in pubs:  # stdin stays open until all arrived: mosquitto_pub drops its queue
            pub.close()
        if sub.poll() is None:
            sub.kill()
            sub.wait()
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            forget_session(int(port), sub_id)
