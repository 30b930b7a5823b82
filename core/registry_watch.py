"""Keeps a long-running command's registry current without a restart.

A `RegistryWatcher` owns one registry directory and the registry loaded from it. It reloads
when asked (`request_reload`, which is what SIGHUP does once `install_sighup` ran) and when the
directory's CSV files change (polled: a change is loaded once the files stayed the same for
one poll, so a half-saved file is not read). A reload is validated in full first: a registry
with any problem is refused, every problem is logged (``meters.csv:7: carrier: ...``), and the
registry in use stays in use. An accepted one replaces it in one reference assignment, then
each listener is called with it; readers take `current` once per unit of work (a message, a
round), so each unit sees one registry or the other, never a mix.

Used by `greenmon ingest`, `greenmon aggregate --follow` and any other command that runs
until stopped: construct (the first load fails like any misconfiguration, at start-up),
`subscribe`, `start`, and `close` in a ``finally``.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from greenmon.registry import Registry, RegistryError, RegistryProblem, load_registry

log = logging.getLogger("greenmon.registry")

Outcome = Literal["applied", "refused", "unchanged"]
Listener = Callable[[Registry], None]
Loader = Callable[[Path], Registry]


@dataclass(frozen=True)
class ReloadResult:
    """What one reload attempt did. `changes` says which meters came, went or changed."""

    outcome: Outcome
    problems: tuple[RegistryProblem, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.outcome == "refused":
            return f"refused ({len(self.problems)} problems)"
        if self.outcome == "unchanged":
            return "unchanged"
        parts = [
            f"{label} {len(ids)} ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})"
            for label, ids in (
                ("meters added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if ids
        ]
        return "applied: " + ("; ".join(parts) or "no meter changed")


def meter_changes(old: Registry, new: Registry) -> tuple[list[str], list[str], list[str]]:
    """Meter ids added, removed and changed (any registered attribute) from `old` to `new`."""
    before = {m.meter_id: m for m in old.meter_infos()}
    after = {m.meter_id: m for m in new.meter_infos()}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(k for k in after.keys() & before.keys() if after[k] != before[k])
    return added, removed, changed


def _signature(root: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Name, size, mtime and inode of each CSV file: cheap to take every poll."""
    sig = []
    try:
        for path in sorted(root.glob("*.csv")):
            try:
                st = path.stat()
            except FileNotFoundError:  # removed between glob and stat
                continue
            sig.append((path.name, st.st_size, st.st_mtime_ns, st.st_ino))
    except OSError:
        return ()
    return tuple(sig)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.glob("*.csv")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        h.update(path.name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


@dataclass
class RegistryWatcher:
    """See the module docstring. `current` is always a fully validated registry."""

    root: Path
    poll_s: float = 1.0
    loader: Loader = load_registry
    _current: Registry = field(init=False)
    _listeners: list[Listener] = field(default_factory=list, init=False)
    _observers: list[Callable[[ReloadResult], None]] = field(default_factory=list, init=False)
    _requested: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _seen: tuple[tuple[str, int, int, int], ...] = field(default=(), init=False)
    _pending: tuple[tuple[str, int, int, int], ...] | None = field(default=None, init=False)
    _digest: str = field(default="", init=False)
    reloads: dict[str, int] = field(
        default_factory=lambda: {"applied": 0, "refused": 0, "unchanged": 0}, init=False
    )
    last: ReloadResult | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._seen = _signature(self.root)
        self._digest = _digest(self.root)
        self._current = self.loader(self.root)  # a bad registry at start-up: RegistryError

    @property
    def current(self) -> Registry:
        return self._current

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(new_registry)` (in the watcher's thread) after each applied reload."""
        self._listeners.append(listener)

    def on_result(self, observer: Callable[[ReloadResult], None]) -> None:
        """Call `observer(result)` after every reload attempt, whatever its outcome."""
        self._observers.append(observer)

    def request_reload(self) -> None:
        """Ask for a reload at the next poll. Safe in a signal handler."""
        self._requested.set()

    def install_sighup(self) -> None:
        """SIGHUP -> `request_reload` (call from the main thread)."""
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.request_reload())

    def check(self) -> ReloadResult | None:
        """One poll: reload if requested, or if the files changed and then held still for one
        poll. Returns what a reload did, None when none was due."""
        with self._lock:
            sig = _signature(self.root)
            requested = self._requested.is_set()
            if not requested:
                if sig == self._seen:
                    self._pending = None
                    return None
                if sig != self._pending:  # changed since the last poll: let it settle
                    self._pending = sig
                    return None
            self._requested.clear()
            self._pending = None
            self._seen = sig
            return self._reload(forced=requested)

    def reload(self) -> ReloadResult:
        """Reload now (what SIGHUP leads to), whatever the files' state."""
        with self._lock:
            self._requested.clear()
            self._pending = None
            self._seen = _signature(self.root)
            return self._reload(forced=True)

    def _reload(self, *, forced: bool) -> ReloadResult:
        digest = _digest(self.root)
        if digest == self._digest and not forced:
            return self._record(ReloadResult("unchanged"))
        try:
            new = self.loader(self.root)
        except RegistryError as exc:
            result = ReloadResult("refused", problems=exc.problems)
            log.error(
                "registry %s: edit refused, the previous registry stays in use. %d problems:\n%s",
                self.root,
                len(exc.problems),
                "\n".join(f"  {p}" for p in exc.problems),
            )
            return self._record(result)
        added, removed, changed = meter_changes(self._current, new)
        if digest == self._digest and not (added or removed or changed):
            log.warning("registry %s: reload requested, files unchanged", self.root)
            return self._record(ReloadResult("unchanged"))
        self._current = new  # one assignment: readers see the old or the new registry
        self._digest = digest
        result = ReloadResult("applied", (), tuple(added), tuple(removed), tuple(changed))
        log.warning("registry %s reloaded, %s", self.root, result.describe())
        for listener in list(self._listeners):
            try:
                listener(new)
            except Exception:  # one listener's bug must not stop the others or the watcher
                log.exception("registry listener %r failed", listener)
        return self._record(result)

    def _record(self, result: ReloadResult) -> ReloadResult:
        self.reloads[result.outcome] += 1
        self.last = result
        for observer in list(self._observers):
            try:
                observer(result)
            except Exception:
                log.exception("registry observer %r failed", observer)
        return result

    # -- thread --------------------------------------------------------------------------
    def start(self) -> RegistryWatcher:
        """Poll in a daemon thread until `close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="registry-watch", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # never let the watcher die: the registry in use stays
                log.exception("registry watcher: check failed")
            # Wake early on SIGHUP: `request_reload` sets the event this waits on.
            self._requested.wait(self.poll_s)

    def close(self) -> None:
        self._stop.set()
        self._requested.set()  # wake the thread
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


__all__ = ["RegistryWatcher", "ReloadResult", "meter_changes"]
