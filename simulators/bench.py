"""`greenmon bench simulate`: how fast the simulators generate and publish.

This module owns the benchmark figures: for a fleet of ``enterprises`` (1,000 by default, about
9,600 meters) over one simulated day at 15 minutes it times, separately, fleet generation,
planning the run (world + faults + messages, the part that is pure computation), writing the
out-file and the truth, and publishing everything at QoS 1 to a broker, and reports messages
and readings per second of each step. Without a broker URL it starts its own Mosquitto on a
free loopback port in a scratch directory (nothing of the user's is touched) and stops it.

The publish time is printed beside its goal (issue 13): a 1,000-enterprise day in at most
`PUBLISH_GOAL_S` seconds, scaled to the fleet and days asked for.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from greenmon.deploy.local import LocalServices
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
            result = publish(plan.messages, opts)
        figures.update(
            mqtt_url=url if mqtt_url else "private Mosquitto (scratch directory)",
            published=result.published,
            publish_s=round(result.seconds, 3),
            publish_messages_per_s=round(result.rate),
            publish_readings_per_s=round(readings / result.seconds) if result.seconds else 0,
            publish_processes=opts.processes,
            connects=result.connects,
        )
        # the goal, scaled to the fleet and the days published (at 15 minutes, per reading)
        goal = PUBLISH_GOAL_S * days * enterprises / 1000 * 900 / step_s
        figures["publish_goal_s"] = round(goal, 3)
        figures["publish_within_goal"] = result.seconds <= goal
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
