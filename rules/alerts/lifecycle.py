"""The alert lifecycle: a transition table, pending -> firing -> resolved (pure).

An alert is one (scope, subject, rule). Each evaluation at moment ``now`` (seconds since the
epoch: the evaluation's as-of moment, so that history replays the same way) gives the rule's
`Condition` for it: ``active`` (the rule's condition holds), ``clear`` (it has fallen back
past the hysteresis line: a value hovering between the firing line and the clear line leaves
the alert as it is), the level, value, threshold and message. `step` classifies what happened
into an *event* and looks the move up in `TRANSITIONS`:

==========  ===================  ==========  ======  ======
from        event                to          record  notify
==========  ===================  ==========  ======  ======
inactive    active, no wait      firing      yes     yes
inactive    active               pending     yes     no
inactive    quiet                inactive    no      no
pending     active, waited       firing      yes     yes
pending     active               pending     no      no
pending     hold                 pending     no      no
pending     clear                resolved    yes     no
firing      active, new level    firing      yes     yes
firing      active               firing      no      no
firing      hold                 firing      no      no
firing      clear, waited        resolved    yes     yes
firing      clear                firing      no      no
==========  ===================  ==========  ======  ======

"inactive" is no state at all or ``resolved``. "waited": the condition has held (or, to
resolve, has been clear) for ``pending_for`` (``keep_firing_for``) seconds; with 0 the move is
immediate. "hold": neither active nor clear (inside the hysteresis band) — the alert keeps its
course: a pending one stays pending (it fires once the condition holds again after
``pending_for``), a firing one stays and its clear timer restarts; so a value hovering at the
line gives one pending and one firing, not a transition each time it crosses. A condition
that is missing (the rule could not be judged: no data, a rule switched off) is "hold" for a
live alert and "quiet" otherwise.

"record" = a transition point is written (InfluxDB ``alert``, history, MQTT); "notify" = it
also goes to the webhooks (a pending alert that never fired is nobody's business). A moment at
or before the alert's last evaluation changes nothing, so evaluating the same moment twice (or
a restart re-running it) neither repeats nor forgets anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

__all__ = [
    "TRANSITIONS",
    "AlertState",
    "Condition",
    "Key",
    "Step",
    "Transition",
    "classify",
    "step",
]

State = Literal["pending", "firing", "resolved"]
Key = tuple[str, str, str]  # scope, subject, rule


@dataclass(frozen=True, slots=True)
class Condition:
    """One rule's verdict for one subject at one evaluation."""

    active: bool
    clear: bool
    level: str | None
    value: float | None
    threshold: float | None
    message: str


@dataclass(frozen=True, slots=True)
class AlertState:
    """What the store keeps per alert."""

    key: Key
    state: State
    level: str | None
    value: float | None
    threshold: float | None
    message: str
    since: float  # when the current state began
    active_since: float | None  # when the condition began to hold (pending -> firing timer)
    clear_since: float | None  # when the condition began to be clear (firing -> resolved)
    updated: float  # the last evaluation moment applied


@dataclass(frozen=True, slots=True)
class Transition:
    """A recorded change of state (one InfluxDB ``alert`` point, one history row)."""

    key: Key
    state: State
    previous: State | None
    level: str  # red|yellow while pending/firing; green once resolved
    value: float | None
    threshold: float | None
    message: str
    at: float
    notify: bool


@dataclass(frozen=True, slots=True)
class Step:
    """Where a row of `TRANSITIONS` leads."""

    to: State | None  # None: inactive (no state kept beyond what there was)
    record: bool
    notify: bool


#: (from, event) -> Step: the whole lifecycle (see the module docstring).
TRANSITIONS: Final[dict[tuple[str, str], Step]] = {
    ("inactive", "active_now"): Step("firing", True, True),
    ("inactive", "active"): Step("pending", True, False),
    ("inactive", "quiet"): Step(None, False, False),
    ("pending", "active_waited"): Step("firing", True, True),
    ("pending", "active"): Step("pending", False, False),
    ("pending", "hold"): Step("pending", False, False),
    ("pending", "clear"): Step("resolved", True, False),
    ("firing", "active_new_level"): Step("firing", True, True),
    ("firing", "active"): Step("firing", False, False),
    ("firing", "hold"): Step("firing", False, False),
    ("firing", "clear_waited"): Step("resolved", True, True),
    ("firing", "clear"): Step("firing", False, False),
}


def _origin(prev: AlertState | None) -> str:
    return "inactive" if prev is None or prev.state == "resolved" else prev.state


def classify(
    prev: AlertState | None,
    cond: Condition | None,
    now: float,
    pending_for: float,
    keep_firing_for: float,
) -> tuple[str, str]:
    """(from, event) for `TRANSITIONS`."""
    origin = _origin(prev)
    active = cond is not None and cond.active
    if origin == "inactive":
        if not active:
            return origin, "quiet"
        return origin, "active_now" if pending_for <= 0 else "active"
    assert prev is not None
    if cond is None:
        return origin, "hold"
    if origin == "pending":
        if not active:
            return origin, "clear" if cond.clear else "hold"
        started = prev.active_since if prev.active_since is not None else prev.since
        return origin, "active_waited" if now - started >= pending_for else "active"
    # firing
    if active:
        assert cond is not None
        return origin, "active_new_level" if cond.level != prev.level else "active"
    if cond is None or not cond.clear:
        return origin, "hold"
    started = prev.clear_since if prev.clear_since is not None else now
    return origin, "clear_waited" if now - started >= keep_firing_for else "clear"


def step(
    key: Key,
    prev: AlertState | None,
    cond: Condition | None,
    now: float,
    pending_for: float,
    keep_firing_for: float,
) -> tuple[AlertState | None, Transition | None]:
    """Apply one evaluation to one alert: its new state (None = none kept) and the
    transition to record, if any."""
    if prev is not None and now <= prev.updated:
        return prev, None  # this moment (or a later one) was already applied
    origin, event = classify(prev, cond, now, pending_for, keep_firing_for)
    move = TRANSITIONS[(origin, event)]
    if move.to is None:
        return prev, None
    if cond is None:  # a live alert whose rule could not be judged: only the clock moves
        assert prev is not None
        return replace(prev, updated=now, clear_since=None), None
    changed = move.to != (prev.state if prev is not None else None)
    since = now if changed or move.record else (prev.since if prev else now)
    active_since: float | None = (
        prev.active_since
        if prev is not None and origin != "inactive" and prev.active_since is not None
        else now
    )
    if move.to == "resolved":
        active_since = None
    clear_since: float | None = None
    if move.to == "firing" and event == "clear":
        clear_since = prev.clear_since if prev is not None and prev.clear_since else now
    level = cond.level if move.to != "resolved" else "green"
    if move.to == "firing" and event in ("hold", "clear"):
        assert prev is not None
        level = prev.level  # outside its firing condition it keeps the level it fired with
    state = AlertState(
        key=key,
        state=move.to,
        level=level,
        value=cond.value,
        threshold=cond.threshold,
        message=cond.message,
        since=since,
        active_since=active_since,
        clear_since=clear_since,
        updated=now,
    )
    if not move.record:
        return state, None
    transition = Transition(
        key=key,
        state=move.to,
        previous=prev.state if prev is not None else None,
        level=level or "green",
        value=cond.value,
        threshold=cond.threshold,
        message=cond.message,
        at=now,
        notify=move.notify,
    )
    return state, transition
