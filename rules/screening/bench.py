"""``greenmon bench screen``: screening and classifying a city for a year, against reading it.

A seeded fleet (default 1,000 enterprises, 3% green leaders, one year of earlier statistics)
gets a year of daily aggregator outputs (`greenmon.simulators.outputs.synthesize_year`: the
``energy`` rows, total and per carrier, daily and monthly, the previous year's months, and
the generation meters' ``meter_energy`` rows), written to a private influxd started on a free
loopback port (or to ``--influx-url``). Then, in each of ``--rounds`` rounds:

- **read**: everything `greenmon screen` reads from InfluxDB for the year (the daily total rows
  one month per query, the generation and previous-year sums) — the baseline;
- **judge**: facts, screening, classes and plan indicators from those frames (what the issue's
  speed goal is about: at most 10 s for 1,000 enterprises and a year of daily data);
- **output**: the ``--json`` objects and the HTML report of both commands;
- **store**: writing the ``screening`` and ``efficiency_class`` points.

Medians over the rounds are printed beside each other, with judge / read.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import typer

__all__ = ["ScreenBench", "register_bench", "run_bench"]

GOAL_S: Final = 10.0


@dataclass
class ScreenBench:
    enterprises: int
    year: int
    daily_rows: int = 0
    points_written: int = 0
    setup_s: float = 0.0
    read_s: list[float] = field(default_factory=list)
    rows_read: int = 0
    judge_s: list[float] = field(default_factory=list)
    output_s: list[float] = field(default_factory=list)
    store_s: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    passed: int = 0
    classes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        med = statistics.median
        judge, read = med(self.judge_s), med(self.read_s)
        return {
            "enterprises": self.enterprises,
            "year": self.year,
            "daily_rows": self.daily_rows,
            "points_written_for_the_bench": self.points_written,
            "rows_read": self.rows_read,
            "rounds": len(self.judge_s),
            "read_s": round(read, 3),
            "judge_s": round(judge, 3),
            "judge_over_read": round(judge / read, 3) if read else None,
            "goal_s": GOAL_S,
            "goal_met": judge <= GOAL_S,
            "read_plus_judge_s": round(read + judge, 3),
            "output_s": round(med(self.output_s), 3),
            "store_s": round(med(self.store_s), 3),
            "judge_steps_s": {k: round(med(v), 3) for k, v in self.steps.items()},
            "rounds_s": {
                "read": [round(x, 3) for x in self.read_s],
                "judge": [round(x, 3) for x in self.judge_s],
            },
            "setup_s": round(self.setup_s, 1),
            "passed_screening": self.passed,
            "classes": self.classes,
            "cores": os.cpu_count(),
        }


def run_bench(
    enterprises: int,
    year: int,
    seed: int,
    rounds: int,
    *,
    influx_url: str | None = None,
    scratch: Path | None = None,
    say: Any = lambda _msg: None,
) -> ScreenBench:
    import polars as pl

    from greenmon.deploy.local import LocalServices
    from greenmon.influx import InfluxClient
    from greenmon.registry import load_registry
    from greenmon.rules.screening.inputs import read_measured
    from greenmon.rules.screening.output import classify_json, screen_json
    from greenmon.rules.screening.period import Period
    from greenmon.rules.screening.report import render_report
    from greenmon.rules.screening.service import Options, judge, load_all
    from greenmon.rules.screening.store import write_classes, write_screening
    from greenmon.simulators.fleet import generate_fleet, write_fleet
    from greenmon.simulators.outputs import synthesize_year, write_outputs

    work = scratch or Path(tempfile.mkdtemp(prefix="greenmon-bench-screen-"))
    work.mkdir(parents=True, exist_ok=True)
    services: LocalServices | None = None
    bench = ScreenBench(enterprises, year)
    started = time.perf_counter()
    try:
        if influx_url is None:
            say("starting a private influxd on a free loopback port")
            services = LocalServices(work / "run")
            services.runtime_dir.mkdir(parents=True, exist_ok=True)
            services.start("influxd")
            influx_url = services.influx_url
        client = InfluxClient(influx_url, "bench_screen", timeout=120.0)
        client.drop_database()
        client.ensure_database()
        say(f"fleet of {enterprises} enterprises (seed {seed}) and a year of daily outputs")
        fleet = generate_fleet(enterprises, seed, year=year, leader_share=0.03, history_years=1)
        write_fleet(fleet, work / "fleet", overwrite=True)
        registry = load_registry(work / "fleet")
        frames = synthesize_year(fleet, registry.meters, registry.enterprises, year,
                                 previous_years=1)  # fmt: skip
        energy = frames["energy"]
        bench.daily_rows = energy.filter(
            (pl.col("window") == "1d") & (pl.col("carrier") == "total")
        ).height
        generation = frames["meter_energy"].filter(pl.col("role") == "generation")
        say(f"writing {energy.height:,} energy and {generation.height:,} meter_energy points")
        written = write_outputs(client, {"energy": energy, "meter_energy": generation})
        bench.points_written = sum(written.values())
        bench.setup_s = time.perf_counter() - started
        period = Period.of(year)
        rules = load_all(Options(year=year))
        for r in range(rounds):
            say(f"round {r + 1} of {rounds}: read, judge, output, store")
            t = time.perf_counter()
            measured = read_measured(client, period, previous=True)
            bench.read_s.append(time.perf_counter() - t)
            bench.rows_read = measured.rows
            t = time.perf_counter()
            verdict = judge(registry, measured, period, rules)
            bench.judge_s.append(time.perf_counter() - t)
            for step, seconds in verdict.seconds.items():
                bench.steps.setdefault(step, []).append(seconds)
            t = time.perf_counter()
            screened = screen_json(verdict)
            classified = classify_json(verdict)
            render_report(verdict, screened)
            render_report(verdict, classified)
            json.dumps(screened, ensure_ascii=False, default=str)
            bench.output_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert verdict.screening is not None
            write_screening(client, verdict.screening, period, rules.screening.info.label)
            cuts = [c.class_ for c in rules.efficiency.rules.classes.cuts]
            write_classes(client, verdict.classes, period, rules.efficiency.info.label, cuts)
            bench.store_s.append(time.perf_counter() - t)
            bench.passed = int(verdict.screening.candidates.get_column("passed").sum())
            bench.classes = dict(
                verdict.classes.enterprises.group_by("class").len().sort("class").iter_rows()
            )
        client.close()
    finally:
        if services is not None:
            services.stop("influxd")
    return bench


def register_bench(bench_app: typer.Typer) -> None:
    @bench_app.command("screen")
    def screen_command(
        enterprises: Annotated[int, typer.Option(min=10, help="Enterprises in the fleet.")] = 1000,
        year: Annotated[int, typer.Option(min=2001, max=2100, help="Year judged.")] = 2025,
        seed: Annotated[int, typer.Option(min=0, help="Fleet seed.")] = 7,
        rounds: Annotated[int, typer.Option(min=1, max=20, help="Rounds (medians).")] = 3,
        influx_url: Annotated[
            str | None,
            typer.Option(
                help="Use this InfluxDB (database bench_screen is replaced).",
                show_default="a private influxd",
            ),
        ] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Screen and classify a city for a year of daily data, beside reading it from InfluxDB.

        Goal: judging 1,000 enterprises x 365 days takes at most 10 s on 2 cores.
        """
        from rich.console import Console
        from rich.table import Table

        err = Console(stderr=True)
        result = run_bench(
            enterprises, year, seed, rounds, influx_url=influx_url,
            say=(lambda _m: None) if json_out else err.log,
        )  # fmt: skip
        data = result.to_dict()
        if json_out:
            typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
            return
        table = Table(
            "step", "median s", "note",
            title=f"screen + classify: {data['enterprises']:,} enterprises x {year} "
            f"({data['daily_rows']:,} daily rows), {data['rounds']} rounds, "
            f"{data['cores']} cores",
        )  # fmt: skip
        table.add_row("read from InfluxDB", f"{data['read_s']:.3f}",
                      f"{data['rows_read']:,} rows (the baseline)")  # fmt: skip
        goal = "met" if data["goal_met"] else "MISSED"
        steps = ", ".join(f"{k} {v:.3f}" for k, v in data["judge_steps_s"].items())
        table.add_row("judge: screen + classify + plan", f"{data['judge_s']:.3f}",
                      f"{data['judge_over_read']:.2f} x read; goal <= {GOAL_S:g} s {goal} "
                      f"({steps})")  # fmt: skip
        table.add_row("read + judge", f"{data['read_plus_judge_s']:.3f}", "")
        table.add_row("JSON + HTML of both commands", f"{data['output_s']:.3f}", "")
        table.add_row("store screening + efficiency_class", f"{data['store_s']:.3f}",
                      f"{2 * data['enterprises']:,} points")  # fmt: skip
        Console().print(table)
        Console().print(
            f"passed the screening: {data['passed_screening']}; classes: {data['classes']}; "
            f"set-up (fleet, synthesis, {data['points_written_for_the_bench']:,} points "
            f"written): {data['setup_s']} s"
        )
