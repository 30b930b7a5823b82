"""The lifecycle transition table, from a table of cases, and sequences: no flapping at a
hovering value, the same moment twice changes nothing."""

from __future__ import annotations

import pytest

from greenmon.rules.alerts.lifecycle import TRANSITIONS, AlertState, Condition, classify, step

KEY = ("enterprise", "E0001", "double_control_total")


def cond(active: bool, clear: bool = False, level: str | None = "red", value: float = 1.0):
    return Condition(active, clear, level if active else None, value, 1.0, "m")


def state(
    s: str,
    *,
    level: str = "red",
    since: float = 0.0,
    active_since: float | None = 0.0,
    clear_since: float | None = None,
    updated: float = 0.0,
) -> AlertState:
    return AlertState(KEY, s, level, 1.0, 1.0, "m", since, active_since, clear_since, updated)  # type: ignore[arg-type]


# (previous state, condition, now, pending_for, keep_firing_for) -> (event, new state, recorded)
CASES = [
    # nothing holds: nothing happens
    (None, cond(False), 10, 60, 60, "quiet", None, False),
    # fires at once without a pending time, else goes pending
    (None, cond(True), 10, 0, 60, "active_now", "firing", True),
    (None, cond(True), 10, 60, 60, "active", "pending", True),
    (state("resolved", level="green"), cond(True), 10, 60, 60, "active", "pending", True),
    # pending: fires once the condition held long enough, resolves if it stops
    (state("pending", since=0, active_since=0), cond(True), 30, 60, 60, "active", "pending", False),
    (
        state("pending", since=0, active_since=0),
        cond(True),
        60,
        60,
        60,
        "active_waited",
        "firing",
        True,
    ),
    (state("pending"), cond(False, clear=True), 30, 60, 60, "clear", "resolved", True),
    (state("pending"), cond(False, clear=False), 30, 60, 60, "hold", "pending", False),
    (state("pending"), None, 30, 60, 60, "hold", "pending", False),
    # firing: a new level is recorded; the same level is not
    (
        state("firing", level="yellow"),
        cond(True, level="red"),
        30,
        0,
        60,
        "active_new_level",
        "firing",
        True,
    ),
    (state("firing"), cond(True), 30, 0, 60, "active", "firing", False),
    # inside the hysteresis band (neither active nor clear): stays
    (state("firing"), cond(False, clear=False), 30, 0, 60, "hold", "firing", False),
    (state("firing"), None, 30, 0, 60, "hold", "firing", False),
    # clear: resolves after keep_firing_for of being clear (at once when 0)
    (state("firing"), cond(False, clear=True), 30, 0, 60, "clear", "firing", False),
    (
        state("firing", clear_since=10),
        cond(False, clear=True),
        70,
        0,
        60,
        "clear_waited",
        "resolved",
        True,
    ),
    (state("firing"), cond(False, clear=True), 30, 0, 0, "clear_waited", "resolved", True),
]


@pytest.mark.parametrize(
    ("prev", "condition", "now", "pending_for", "keep", "event", "to", "recorded"), CASES
)
def test_transition_table(prev, condition, now, pending_for, keep, event, to, recorded) -> None:
    origin, got = classify(prev, condition, now, pending_for, keep)
    assert got == event
    assert (origin, got) in TRANSITIONS
    new, transition = step(KEY, prev, condition, now, pending_for, keep)
    assert (new.state if new is not None else None) == to
    assert (transition is not None) == recorded
    if transition is not None:
        assert transition.state == to and transition.at == now
        assert transition.notify == TRANSITIONS[(origin, got)].notify


def test_every_row_of_the_table_is_reachable() -> None:
    reached = {classify(c[0], c[1], c[2], c[3], c[4]) for c in CASES}
    assert reached == set(TRANSITIONS)


def test_notify_only_when_people_should_hear() -> None:
    assert TRANSITIONS[("inactive", "active")].notify is False  # pending: not yet
    assert TRANSITIONS[("pending", "clear")].notify is False  # never fired
    assert TRANSITIONS[("pending", "active_waited")].notify is True
    assert TRANSITIONS[("firing", "clear_waited")].notify is True


def test_a_value_hovering_at_the_threshold_does_not_flap() -> None:
    """Ratio around the yellow line 1.00 (clear line 0.99): one firing, no resolution while
    it hovers, one resolution once it stays below the clear line for the keep time."""
    line, clear_line, pending_for, keep = 1.00, 0.99, 3600.0, 86_400.0
    values = [1.001, 0.999, 1.002, 0.998, 1.0005, 0.9995] * 8 + [0.95] * 30
    prev = None
    recorded = []
    for hour, v in enumerate(values):
        c = Condition(v > line, v <= clear_line, "yellow" if v > line else None, v, line, "m")
        prev, t = step(KEY, prev, c, hour * 3600.0, pending_for, keep)
        if t is not None:
            recorded.append((hour, t.state))
    # pending at hour 0; hour 1 is inside the band (pending holds); hour 2 is above the
    # line an hour later: firing; hovering changes nothing; it resolves a day after it
    # fell below the clear line (hour 48) for good
    assert recorded == [(0, "pending"), (2, "firing"), (72, "resolved")]


def test_hovering_with_the_yellow_and_clear_lines_alone_never_resolves() -> None:
    prev = state("firing", level="yellow")
    for minute in range(1, 200):
        v = 1.0 + (0.004 if minute % 2 else -0.004)  # between 0.99 and 1.01
        c = Condition(v > 1.0, v <= 0.99, "yellow" if v > 1.0 else None, v, 1.0, "m")
        prev, t = step(KEY, prev, c, minute * 60.0, 0.0, 0.0)
        assert t is None and prev is not None and prev.state == "firing"


def test_the_same_moment_twice_changes_nothing() -> None:
    first, t1 = step(KEY, None, cond(True), 100.0, 0, 0)
    assert t1 is not None and first is not None and first.state == "firing"
    again, t2 = step(KEY, first, cond(False, clear=True), 100.0, 0, 0)
    assert again == first and t2 is None
    earlier, t3 = step(KEY, first, cond(False, clear=True), 50.0, 0, 0)
    assert earlier == first and t3 is None
