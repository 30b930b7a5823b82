"""The alert state in SQLite: an evaluation all or nothing, the outbox in order, superseded
retained states, failures and backoff, expiry, survival across reopening."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from greenmon.rules.alerts.lifecycle import AlertState, Transition
from greenmon.rules.alerts.store import AlertStore, OutboxEntry

KEY = ("enterprise", "E0001", "double_control_total")


def _state(state: str = "firing", updated: float = 10.0) -> AlertState:
    return AlertState(KEY, state, "red", 2.0, 1.0, "m", 10.0, 10.0, None, updated)  # type: ignore[arg-type]


def _transition() -> Transition:
    return Transition(KEY, "firing", None, "red", 2.0, 1.0, "m", 10.0, True)


def test_an_evaluation_is_kept_whole_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "a" / "alerts.sqlite"
    with AlertStore(path) as store:
        store.apply(
            10.0,
            [_state()],
            [_transition()],
            [OutboxEntry("influx", {"line": "x"}), OutboxEntry("webhook:w", {"id": 1})],
            {("enterprise", "E0001"): "d1"},
        )
    with AlertStore(path) as store:
        assert store.states() == {KEY: _state()}
        assert store.last_evaluated() == 10.0
        assert store.digests() == {("enterprise", "E0001"): "d1"}
        assert [t["state"] for t in store.transitions()] == ["firing"]
        assert store.backlog()["webhook:w"]["pending"] == 1


def test_a_failing_evaluation_leaves_nothing(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(TypeError):
            store.apply(10.0, [_state()], [_transition()], [OutboxEntry("x", {"bad": {1, 2}})], {})
        assert store.states() == {} and store.transitions() == [] and store.last_evaluated() is None


def test_outbox_order_backoff_and_delivery(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "s.sqlite") as store:
        store.apply(1.0, [], [], [OutboxEntry("w", {"n": i}) for i in range(5)], {})
        rows = store.due("w", time.time(), 2)
        assert [r.payload["n"] for r in rows] == [0, 1]
        store.failed([r.id for r in rows], "down", time.time() + 60)
        assert store.due("w", time.time(), 10) == []  # the oldest waits: nothing overtakes it
        assert store.next_try("w") == pytest.approx(time.time() + 60, abs=2)
        later = store.due("w", time.time() + 61, 10)
        assert [r.payload["n"] for r in later] == [0, 1, 2, 3, 4] and later[0].attempts == 1
        store.delivered([r.id for r in later])
        assert store.due("w", time.time() + 61, 10) == [] and store.backlog() == {}


def test_a_newer_retained_state_supersedes_an_older_one(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "s.sqlite") as store:
        store.apply(1.0, [], [], [OutboxEntry("mqtt", {"v": 1}, key="t/a"),
                                  OutboxEntry("mqtt", {"v": 1}, key="t/b")], {})  # fmt: skip
        store.apply(2.0, [], [], [OutboxEntry("mqtt", {"v": 2}, key="t/a")], {})
        rows = store.due("mqtt", time.time(), 10)
        assert [(r.key, r.payload["v"]) for r in rows] == [("t/b", 1), ("t/a", 2)]


def test_old_undeliverable_rows_expire(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "s.sqlite") as store:
        store.apply(1.0, [], [], [OutboxEntry("w", {"n": 1})], {})
        assert store.expire(time.time() - 3600) == 0
        assert store.expire(time.time() + 1) == 1
        assert store.backlog() == {}
