"""`evaluate` on fleets whose answers are worked out by hand (no services needed).

As of 2025-07-01 00:00 Asia/Shanghai: 181 days of 2025 have passed (1 January - 30 June),
184 remain. An enterprise using 10 tce a day is projected to 3,650 tce by days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from greenmon.rules.alerts.evaluate import LAST_SEEN_SCHEMA, METER_DAY_SCHEMA, evaluate
from tests.rules.alerts.conftest import daily, enterprise

AS_OF = datetime(2025, 7, 1, tzinfo=ZoneInfo("Asia/Shanghai"))
JAN1, JUL1 = date(2025, 1, 1), date(2025, 7, 1)


def _rows(judgement, scope: str = "enterprise") -> dict[str, dict]:
    return {r["subject"]: r for r in judgement.subjects.filter(pl.col("scope") == scope).to_dicts()}


def _conditions(judgement, rule: str) -> dict[str, dict]:
    frame = judgement.conditions.filter(pl.col("rule") == rule)
    return {r["subject"]: r for r in frame.to_dicts()}


@pytest.fixture
def fleet(registry_at):
    return registry_at(
        [
            enterprise("A", "X", quota=1000),  # 3,650 projected: red, quota used up
            enterprise("B", "X", quota=100_000),  # far under: green
            enterprise("C", "Y", quota=3650 / 1.03),  # 3% over the schedule: yellow
            enterprise("D", "Y", quota=3650),  # twice its quota: red
        ]
    )


def test_levels_of_enterprises_counties_and_the_city(fleet, rules) -> None:
    data = daily({"A": 10, "B": 10, "C": 10, "D": 20}, JAN1, JUL1)
    j = evaluate(data, fleet, rules, AS_OF)
    assert (j.year, j.days_elapsed, j.days_in_year, j.horizon) == (2025, 181, 365, JUL1)
    e = _rows(j)
    assert {k: v["level"] for k, v in e.items()} == {
        "A": "red", "B": "green", "C": "yellow", "D": "red",
    }  # fmt: skip
    assert e["A"]["ytd_tce"] == pytest.approx(1810)
    assert e["A"]["projected_tce"] == pytest.approx(3650)
    assert e["A"]["ratio"] == pytest.approx(3.65)
    assert e["C"]["ratio"] == pytest.approx(1.03)
    assert e["C"]["prorata_tce"] == pytest.approx(3650 / 1.03 * 181 / 365)
    # what it takes to be green: (quota - year to date) over the 184 days left
    need = (3650 / 1.03 - 1810) / 184
    assert e["C"]["required_tce_per_day"] == pytest.approx(need)
    assert e["C"]["to_green"] == [
        f"must average <= {need:,.1f} tce/day for the remaining 184 days of 2025"
    ]
    assert "cannot return to green" in e["A"]["to_green"][0]
    assert e["B"]["to_green"] == []
    assert e["A"]["reasons"][0].startswith("total red: 1,810.0 tce year to date vs 495.9 tce")
    # counties: the sum of their enterprises' quotas, and they say so
    c = _rows(j, "county")
    assert c["Y"]["level"] == "red"  # both of its firms overrun
    assert c["Y"]["projected_tce"] == pytest.approx(3650 + 7300)
    assert c["Y"]["quota_tce"] == pytest.approx(3650 / 1.03 + 3650)
    assert c["Y"]["quota_source"] == "sum of 2 enterprises' quotas (no targets.csv row)"
    assert c["X"]["level"] == "green"  # A's overrun is B's headroom
    city = _rows(j, "city")["city"]
    assert city["level"] == "green" and city["enterprises"] == 4
    assert city["ratio"] == pytest.approx(18250 / (1000 + 100_000 + 3650 / 1.03 + 3650))


def test_targets_csv_quotas_replace_the_sums(registry_at, rules) -> None:
    reg = registry_at(
        [enterprise("A", "X", quota=1000), enterprise("B", "X", quota=100_000),
         enterprise("C", "Y")],
        targets="scope,subject,year,energy_quota_tce,intensity_target_tce_per_10k_yuan\n"
        "county,X,2025,5000,\ncity,city,2025,10800,\ncounty,X,2024,1,\n",
    )  # fmt: skip
    j = evaluate(daily({"A": 10, "B": 10, "C": 10}, JAN1, JUL1), reg, rules, AS_OF)
    x = _rows(j, "county")["X"]
    assert x["quota_source"] == "targets.csv" and x["quota_tce"] == 5000
    assert x["ratio"] == pytest.approx(7300 / 5000) and x["level"] == "red"
    # a county of enterprises without quota, and no row: not assessed
    y = _rows(j, "county")["Y"]
    assert y["quota_tce"] is None and y["level"] == "green"
    assert y["reasons"][0] == "total: not assessed (no annual quota)"
    city = _rows(j, "city")["city"]
    assert city["quota_source"] == "targets.csv"  # with every enterprise counted
    assert city["ratio"] == pytest.approx(10950 / 10800) and city["level"] == "yellow"


def test_a_summed_quota_leaves_out_enterprises_without_one(registry_at, rules) -> None:
    reg = registry_at([enterprise("A", "X", quota=3650), enterprise("B", "X")])
    j = evaluate(daily({"A": 10, "B": 50}, JAN1, JUL1), reg, rules, AS_OF)
    x = _rows(j, "county")["X"]
    assert (
        x["quota_source"]
        == "sum of 1 enterprises' quotas (no targets.csv row; 1 without a quota left out)"
    )
    assert x["ratio"] == pytest.approx(1.0) and x["level"] == "green"


def test_the_schedule_follows_last_years_monthly_profile(registry_at, rules) -> None:
    reg = registry_at([enterprise("E", "X", quota=3000)])
    last = daily({"E": lambda d: 5 if d.month <= 6 else 15}, date(2024, 1, 1), JAN1)
    now = daily({"E": 5}, JAN1, JUL1)
    j = evaluate(pl.concat([last, now]), reg, rules, AS_OF)
    e = _rows(j)["E"]
    # 2024: 5 x 182 days, then 15 x 184: January to June is 910 / 3,670 of the year
    assert e["basis"] == "2024 monthly profile"
    assert e["share"] == pytest.approx(910 / 3670)
    assert e["projected_tce"] == pytest.approx(905 / (910 / 3670))
    assert e["level"] == "red"  # ~3,650 against 3,000 at last year's pace
    by_days = rules.model_copy(
        update={"schedule": rules.schedule.model_copy(update={"basis": "days"})}
    )
    e_days = _rows(evaluate(pl.concat([last, now]), reg, by_days, AS_OF))["E"]
    assert e_days["basis"] == "days" and e_days["level"] == "green"  # 1,825 by days
    # an incomplete last year is no profile
    gap = last.filter(pl.col("day").dt.month() != 11)
    assert _rows(evaluate(pl.concat([gap, now]), reg, rules, AS_OF))["E"]["basis"] == "days"


def _months(eid: str, year: int, months: range, output: float) -> list[dict]:
    return [
        {"enterprise_id": eid, "month": f"{year}-{m:02d}", "output_value_10k_yuan": output,
         "value_added_10k_yuan": output / 5}
        for m in months
    ]  # fmt: skip


def test_intensity_rose_is_red_behind_target_is_yellow(registry_at, rules) -> None:
    monthly = (
        _months("F", 2025, range(1, 13), 100) + _months("F", 2024, range(1, 13), 100)
        + _months("G", 2025, range(1, 6), 100)  # June's statistics missing
        + _months("H", 2025, range(1, 13), 100)
    )  # fmt: skip
    reg = registry_at(
        [enterprise("F", "X", target=2.5), enterprise("G", "X", target=2.5),
         enterprise("H", "X", target=4.0)],
        monthly=monthly,
    )  # fmt: skip
    last = daily({"F": 9}, date(2024, 1, 1), JAN1)
    now = daily({"F": 10, "G": 10, "H": 10}, JAN1, JUL1)
    j = evaluate(pl.concat([last, now]), reg, rules, AS_OF)
    e = _rows(j)
    f = e["F"]
    assert f["intensity"] == pytest.approx(1810 / 600)
    assert f["intensity_last_year"] == pytest.approx(9 * 182 / 600)
    assert f["intensity_level"] == "red"  # rose year on year
    allowed = (2.5 * 1200 - 1810) / 600
    assert f"must run at <= {allowed:.4f} tce/10k yuan for the rest of 2025" in f["to_green"]
    assert e["H"]["intensity_level"] == "green"  # under its target, no last year
    assert e["G"]["intensity"] is None and "missing for 2025-06" in e["G"]["reasons"][-1]
    value_added = rules.model_copy(
        update={"intensity": rules.intensity.model_copy(update={"denominator": "value_added"})}
    )
    h = _rows(evaluate(pl.concat([last, now]), reg, value_added, AS_OF))["H"]
    assert h["intensity"] == pytest.approx(1810 / 120) and h["intensity_level"] == "yellow"
    cond = _conditions(j, "double_control_intensity")
    assert cond["F"]["active"] and cond["F"]["threshold"] == pytest.approx(9 * 182 / 600)
    # a county's target without a row: what its enterprises would reach on their targets
    x = _rows(j, "county")["X"]
    assert x["intensity_target"] == pytest.approx((2.5 * 600 + 4.0 * 600) / 1200)
    assert x["intensity"] == pytest.approx(3620 / 1200)  # F and H (G cannot be judged)


def test_sudden_change_fires_on_a_spike_day(registry_at, rules) -> None:
    reg = registry_at([enterprise("S", "X", quota=10_000), enterprise("T", "X", quota=10_000)])

    def wobble(spike: float):
        return lambda d: spike if d == date(2025, 6, 30) else (9.5 if d.day % 2 else 10.5)

    j = evaluate(daily({"S": wobble(30.0), "T": wobble(10.4)}, JAN1, JUL1), reg, rules, AS_OF)
    assert j.judged_day == date(2025, 6, 30)
    c = _conditions(j, "sudden_change")
    assert c["S"]["active"] and c["S"]["level"] == "yellow" and c["S"]["value"] == 30.0
    # median 10, MAD 0.5: 10 + 3.5 x 0.5 / 0.6745
    assert c["S"]["threshold"] == pytest.approx(10 + 3.5 * 0.5 / 0.6745)
    assert "3.0x the median of the 28 days before" in c["S"]["message"]
    assert not c["T"]["active"] and c["T"]["clear"]


def test_data_completeness_and_gateway_silence(fleet, rules) -> None:
    meter_days = pl.DataFrame(
        {"meter": ["A-EL", "B-EL", "D-EL"], "completeness": [0.875, 1.0, 0.95]},
        schema=METER_DAY_SCHEMA,
    )
    now = AS_OF.astimezone(UTC)
    last_seen = pl.DataFrame(
        {"meter": ["A-EL", "B-EL", "D-EL"],
         "last": [now - timedelta(hours=2), now - timedelta(minutes=10), now]},
        schema=LAST_SEEN_SCHEMA,
    )  # fmt: skip
    data = daily({"A": 10, "B": 10, "C": 10, "D": 10}, JAN1, JUL1)
    j = evaluate(data, fleet, rules, AS_OF, meter_days=meter_days, last_seen=last_seen)
    c = _conditions(j, "data_completeness")
    assert c["A"]["active"] and c["A"]["value"] == 0.875 and c["A"]["threshold"] == 0.9
    assert c["A"]["message"] == "2025-06-30: 1 meter(s) below 90% completeness: A-EL 0.875"
    assert c["C"]["active"] and c["C"]["value"] == 0.0  # no row that day: 0
    assert not c["B"]["active"] and not c["D"]["active"]
    s = _conditions(j, "gateway_silent")
    assert s["A"]["active"] and s["A"]["value"] == pytest.approx(2.0)
    assert s["C"]["active"] and "nothing from some for more than 6 h" in s["C"]["message"]
    assert s["A"]["message"] == (
        "1 of 1 meter(s) silent (up to 2.0 h, since 2025-06-30 14:00 UTC): A-EL"
    )
    assert not s["B"]["active"] and s["B"]["clear"] and not s["D"]["active"]


def test_no_data_yet_judges_nothing(fleet, rules) -> None:
    empty = daily({}, JAN1, JAN1)
    j = evaluate(empty, fleet, rules, AS_OF)
    assert j.judged_day is None
    assert set(j.subjects.get_column("level")) == {"green"}
    assert not j.conditions.get_column("active").any()
    assert not j.conditions.get_column("clear").any()  # nothing clears for lack of data
    first = evaluate(empty, fleet, rules, datetime(2025, 1, 1, 9, tzinfo=ZoneInfo("Asia/Shanghai")))
    assert "no complete day of 2025 yet" in first.subjects.get_column("reasons")[0][0]


def test_the_aggregator_behind_moves_the_horizon_not_the_consumption(fleet, rules) -> None:
    # data through 20 June only: the year to date ends there (170 days), not at 30 June
    data = daily({"A": 10, "B": 10, "C": 10, "D": 10}, JAN1, date(2025, 6, 21))
    j = evaluate(data, fleet, rules, AS_OF)
    assert j.horizon == date(2025, 6, 21) and j.days_elapsed == 171
    assert _rows(j)["B"]["projected_tce"] == pytest.approx(3650)
