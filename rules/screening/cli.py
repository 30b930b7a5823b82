"""`greenmon screen` and `greenmon classify`: judge a year of what the aggregator measured."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from greenmon.cli_common import JsonOption, console, print_json, progress_bars, service_options
from greenmon.config import Settings

_FILES = "Rule files"

YearOption = Annotated[
    int, typer.Option("--year", min=2000, max=2100, help="Calendar year to judge (local time).")
]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Judge the year to date as of this local day (2025-06-15: data before that day) "
        "or RFC 3339 instant.",
        show_default="the whole year, or today when the year is not over",
    ),
]
ProfileOption = Annotated[
    str,
    typer.Option(
        "--profile",
        help="Efficiency profile: huaian-2024 (Jiangsu city practice, Huai'an 2024) or zhejiang "
        "(six indicators, placeholder weights).",
        rich_help_panel=_FILES,
    ),
]
ReferencesOption = Annotated[
    Path | None,
    typer.Option(
        "--references",
        help="Directory with your intensity_references.csv (and the other reference tables): "
        "their rows override the packaged ones.",
        file_okay=False,
        exists=True,
    ),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Also write a self-contained HTML report (no network needed to open it).",
        dir_okay=False,
    ),
]
TopOption = Annotated[int, typer.Option("--top", min=0, help="Rows of the table (0: all).")]
NoStoreOption = Annotated[
    bool,
    typer.Option(
        "--no-store", help="Do not write the decisions to InfluxDB (screening/efficiency_class)."
    ),
]


def _as_of(text: str | None, tz: str) -> datetime | None:
    from greenmon.aggregator.cli import parse_moment

    if text is None:
        return None
    return parse_moment(text, tz, "--as-of")


def _default_as_of(year: int, given: datetime | None) -> datetime | None:
    """Without --as-of, a year that is not over is judged to date."""
    from datetime import UTC

    if given is not None:
        return given
    now = datetime.now(UTC)
    return now if now.year <= year else None


def screen_cmd(
    settings: Settings,
    year: YearOption,
    as_of: AsOfOption = None,
    standard: Annotated[
        str,
        typer.Option(
            "--standard",
            help="GB/T 36132 edition whose structure the criteria follow: 2025 or 2018.",
            rich_help_panel=_FILES,
        ),
    ] = "2025",
    criteria: Annotated[
        Path | None,
        typer.Option(
            "--criteria",
            help="Your criteria TOML, merged over the packaged one (only what it changes).",
            dir_okay=False,
            rich_help_panel=_FILES,
        ),
    ] = None,
    profile: ProfileOption = "huaian-2024",
    efficiency_criteria: Annotated[
        Path | None,
        typer.Option(
            "--efficiency-criteria",
            help="Your efficiency TOML for the class counts in the header (as classify "
            "--criteria).",
            dir_okay=False,
            rich_help_panel=_FILES,
        ),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="Your plan-targets TOML (indicator 10's targets).",
            dir_okay=False,
            rich_help_panel=_FILES,
        ),
    ] = None,
    references: ReferencesOption = None,
    report: ReportOption = None,
    top: TopOption = 25,
    no_store: NoStoreOption = False,
    json_out: JsonOption = False,
) -> None:
    """Screen green-factory candidates (GB/T 36132) over a year, or the year to date.

    For every enterprise of the registry: basic requirements (declared in enterprises.csv,
    online monitoring judged from completeness) pass or fail; indicators computed from the
    aggregator's `energy` data and monthly.csv (unit-product energy and carbon, renewable
    share, intensity against the provincial reference and the industry, output per mu) are
    scored between baseline and leading values and weighted by group; an indicator without
    data is not scored and says why. Prints the plan's energy indicators, then the candidates
    ranked best first with the gap each must close. Writes the `screening` measurement.

    The shipped weights, curve and pass score are placeholders (GB/T 36132-2025's are not
    public): every output names the criteria file, its version and status. Override with
    `--criteria FILE`.

    Examples: `greenmon screen --registry fleet/ --year 2025`;
    `greenmon screen --registry fleet/ --year 2025 --as-of 2025-07-01 --json`;
    `greenmon screen --registry fleet/ --year 2025 --report screening-2025.html`.
    """
    _run(settings, year, as_of, standard, criteria, profile, efficiency_criteria, plan,
         references, report, top, no_store, json_out, screening=True)  # fmt: skip


def classify_cmd(
    settings: Settings,
    year: YearOption,
    as_of: AsOfOption = None,
    profile: ProfileOption = "huaian-2024",
    criteria: Annotated[
        Path | None,
        typer.Option(
            "--criteria",
            help="Your efficiency TOML, merged over the profile's file (only what it changes).",
            dir_okay=False,
            rich_help_panel=_FILES,
        ),
    ] = None,
    references: ReferencesOption = None,
    report: ReportOption = None,
    top: Annotated[
        int, typer.Option("--top", min=0, help="Rows per county in the table (0: all).")
    ] = 5,
    no_store: NoStoreOption = False,
    json_out: JsonOption = False,
) -> None:
    """Classify enterprises by resource-use efficiency (亩均论英雄): A, B, C, D, or T.

    Score = Σ value / benchmark x weight over tax per mu, sales per mu and tax per tce (the
    Jiangsu city practice documented by Huai'an in 2024, not Nantong's own method, which was
    not found); benchmark = 2 x the county's previous-year average; classes by rank within the
    county: A top 20%, B to 60%, C to 95%, D the rest (tied scores share the better rank). T:
    below 3 mu (unless above scale), producing under two years, a declared exemption, or
    missing data. Prints a per-county summary and the enterprises; writes the
    `efficiency_class` measurement. `--profile zhejiang` selects the six-indicator variant.

    Examples: `greenmon classify --registry fleet/ --year 2025`;
    `greenmon classify --registry fleet/ --year 2025 --json --report classes-2025.html`.
    """
    _run(settings, year, as_of, "2025", None, profile, criteria, None, references, report,
         top, no_store, json_out, screening=False)  # fmt: skip


def _run(
    settings: Settings,
    year: int,
    as_of: str | None,
    standard: str,
    criteria: Path | None,
    profile: str,
    efficiency: Path | None,
    plan: Path | None,
    references: Path | None,
    report: Path | None,
    top: int,
    no_store: bool,
    json_out: bool,
    *,
    screening: bool,
) -> None:
    from greenmon.rules.screening.output import (
        classify_json,
        print_classify,
        print_screen,
        screen_json,
    )
    from greenmon.rules.screening.service import Options, run

    opts = Options(
        year=year,
        as_of=_default_as_of(year, _as_of(as_of, settings.timezone)),
        standard=standard,
        criteria=criteria,
        profile=profile,
        efficiency=efficiency,
        plan=plan,
        references=references,
        screening=screening,
        write=not no_store,
    )
    bar, update = progress_bars()
    with bar:
        verdict = run(settings, opts, update)
    data = screen_json(verdict) if screening else classify_json(verdict)
    if report is not None:
        from greenmon.rules.screening.report import write_report

        write_report(report, verdict, data)
        data["report"] = str(report)
    if json_out:
        print_json(data)
        return
    if screening:
        print_screen(console, verdict, top)
    else:
        print_classify(console, verdict, top)
    if report is not None:
        console.print(f"report: {report}")


def register(app: typer.Typer) -> None:
    app.command("screen")(service_options(screen_cmd))
    app.command("classify")(service_options(classify_cmd))
