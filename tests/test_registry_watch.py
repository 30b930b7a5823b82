"""RegistryWatcher: reload on change or request, validated first, refused edits keep the old."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from greenmon.registry import Registry, RegistryError
from greenmon.registry_watch import RegistryWatcher, ReloadResult

REGISTRY = Path(__file__).parent / "data" / "registry"
NEW_METER = "E0002-NG-NEW,E0002,natural_gas,m3,register,1,9999999,boundary,false,\n"


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    shutil.copytree(REGISTRY, root)
    return root


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)
    # mtime granularity: make sure the change is visible even on coarse clocks
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def _settle(w: RegistryWatcher) -> ReloadResult | None:
    """Two polls: the first sees the change, the second (files unchanged since) loads it."""
    first = w.check()
    assert first is None, "a change is loaded only once the files held still for a poll"
    return w.check()


def test_nothing_changed_nothing_done(reg: Path) -> None:
    w = RegistryWatcher(reg)
    assert w.check() is None and w.check() is None
    assert w.reloads == {"applied": 0, "refused": 0, "unchanged": 0}


def test_a_bad_registry_at_start_fails_like_any_misconfiguration(reg: Path) -> None:
    _append(reg / "meters.csv", "E0009-X,E0404,electricity,kWh,register,1,,boundary,false,\n")
    with pytest.raises(RegistryError, match="unknown enterprise 'E0404'"):
        RegistryWatcher(reg)


def test_an_added_meter_is_applied_and_listeners_get_the_new_registry(reg: Path) -> None:
    w = RegistryWatcher(reg)
    old = w.current
    got: list[Registry] = []
    w.subscribe(got.append)
    _append(reg / "meters.csv", NEW_METER)
    result = _settle(w)
    assert result is not None and result.outcome == "applied"
    assert result.added == ("E0002-NG-NEW",) and not result.removed and not result.changed
    assert "meters added 1 (E0002-NG-NEW)" in result.describe()
    assert w.current is not old and w.current.meter("E0002-NG-NEW") is not None
    assert old.meter("E0002-NG-NEW") is None  # the old registry object is untouched
    assert got == [w.current]


def test_a_broken_edit_is_refused_with_every_problem_and_the_old_registry_stays(
    reg: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = RegistryWatcher(reg)
    before = w.current
    got: list[Registry] = []
    w.subscribe(got.append)
    _append(
        reg / "meters.csv",
        "E0002-BAD-1,E0002,gass,m3,register,1,,boundary,false,\n"
        "E0002-BAD-2,E0404,electricity,kWh,register,-1,,boundary,false,\n",
    )
    with caplog.at_level(logging.ERROR, logger="greenmon.registry"):
        result = _settle(w)
    assert result is not None and result.outcome == "refused"
    reasons = [str(p) for p in result.problems]
    assert any("meters.csv:13: carrier: unknown carrier 'gass'" in r for r in reasons), reasons
    assert any("meters.csv:14: enterprise_id: unknown enterprise 'E0404'" in r for r in reasons)
    assert any("meters.csv:14: multiplier" in r for r in reasons), reasons
    assert w.current is before and got == []
    logged = caplog.text
    assert "refused" in logged and "previous registry stays in use" in logged
    for r in reasons:
        assert r in logged  # every problem is in the log, not just the first
    # Fixed: the next poll cycle applies it.
    text = (reg / "meters.csv").read_text().splitlines(keepends=True)
    (reg / "meters.csv").write_text("".join(text[:-2]) + NEW_METER)
    result = _settle(w)
    assert result is not None and result.outcome == "applied"
    assert result.added == ("E0002-NG-NEW",)
    assert w.reloads == {"applied": 1, "refused": 1, "unchanged": 0}


def test_changed_and_removed_meters_are_named(reg: Path) -> None:
    w = RegistryWatcher(reg)
    lines = (reg / "meters.csv").read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not ln.startswith("E0003-HT-01")]
    weld = "E0001-EL-WELD,E0001,electricity,kWh,register,"
    kept = [ln.replace(weld + "80,", weld + "120,") for ln in kept]
    (reg / "meters.csv").write_text("".join(kept))
    result = _settle(w)
    assert result is not None
    assert (result.outcome, result.added, result.removed, result.changed) == (
        "applied",
        (),
        ("E0003-HT-01",),
        ("E0001-EL-WELD",),
    )


def test_a_touch_or_a_request_without_edits_is_unchanged(reg: Path) -> None:
    w = RegistryWatcher(reg)
    before = w.current
    os.utime(reg / "meters.csv", ns=(1, time.time_ns() + 5_000_000_000))
    assert _settle(w) == ReloadResult("unchanged")
    w.request_reload()
    assert w.check() == ReloadResult("unchanged")  # a request loads (and validates) at once
    assert w.current is before


def test_a_request_reloads_at_the_next_check_without_waiting_to_settle(reg: Path) -> None:
    w = RegistryWatcher(reg)
    _append(reg / "meters.csv", NEW_METER)
    w.request_reload()
    result = w.check()
    assert result is not None and result.outcome == "applied"


def test_a_failing_listener_does_not_stop_the_others(reg: Path) -> None:
    w = RegistryWatcher(reg)
    got: list[Registry] = []

    def boom(_r: Registry) -> None:
        raise RuntimeError("listener bug")

    w.subscribe(boom)
    w.subscribe(got.append)
    _append(reg / "meters.csv", NEW_METER)
    assert w.reload().outcome == "applied"
    assert got == [w.current]


def test_the_thread_follows_edits_and_sighup(reg: Path) -> None:
    w = RegistryWatcher(reg, poll_s=0.05)
    applied = threading.Event()
    w.subscribe(lambda _r: applied.set())
    outcomes: list[str] = []
    w.on_result(lambda r: outcomes.append(r.outcome))
    previous = signal.getsignal(signal.SIGHUP)
    w.install_sighup()
    w.start()
    try:
        _append(reg / "meters.csv", NEW_METER)
        assert applied.wait(10), "the edit was not picked up"
        assert w.current.meter("E0002-NG-NEW") is not None
        n = len(outcomes)
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while len(outcomes) == n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert outcomes[n:] == ["unchanged"]  # SIGHUP led to a reload (of the same files)
    finally:
        w.close()
        signal.signal(signal.SIGHUP, previous)
