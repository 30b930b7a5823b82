"""The alerts' memory: SQLite in the runtime directory (``<runtime-dir>/alerts/<database>.sqlite``).

Owns three things, changed together in one transaction per evaluation (`AlertStore.apply`), so
a crash or a restart finds either all of an evaluation or none of it:

- ``alerts`` — the state of every alert (`greenmon.rules.alerts.lifecycle.AlertState`);
- ``transitions`` — every recorded transition (what ``alerts list`` shows as recent history);
- ``outbox`` — what each sink still has to deliver, in order; a sink's worker marks rows
  delivered, or counts the attempt and the next time to try (`delivered`, `failed`).

Plus ``subjects`` (the digest of each subject's last retained MQTT state, so that an unchanged
subject is not published again) and ``meta`` (the schema version, the last evaluation moment).
One connection, serialised by a lock, shared by the evaluation and the sink workers; WAL mode
so that ``alerts list`` in another process reads while ``alerts watch`` writes.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from greenmon.rules.alerts.errors import StoreError
from greenmon.rules.alerts.lifecycle import AlertState, Key, Transition

__all__ = ["AlertStore", "OutboxEntry", "OutboxRow", "default_path"]

_SCHEMA_VERSION: Final = "1"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    scope TEXT NOT NULL, subject TEXT NOT NULL, rule TEXT NOT NULL,
    state TEXT NOT NULL, level TEXT, value REAL, threshold REAL, message TEXT NOT NULL,
    since REAL NOT NULL, active_since REAL, clear_since REAL, updated REAL NOT NULL,
    PRIMARY KEY (scope, subject, rule)
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL, scope TEXT NOT NULL, subject TEXT NOT NULL, rule TEXT NOT NULL,
    state TEXT NOT NULL, previous TEXT, level TEXT NOT NULL, value REAL, threshold REAL,
    message TEXT NOT NULL, notify INTEGER NOT NULL, recorded REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_at ON transitions (at);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL, key TEXT, payload TEXT NOT NULL, created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0, last_error TEXT,
    delivered REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, delivered, id);
CREATE TABLE IF NOT EXISTS subjects (
    scope TEXT NOT NULL, subject TEXT NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (scope, subject)
);
"""
_ALERT_COLUMNS: Final = (
    "scope, subject, rule, state, level, value, threshold, message, since, active_since, "
    "clear_since, updated"
)


def default_path(runtime_dir: Path, database: str) -> Path:
    """One state per database: alerts judge what a database holds (a demo's database, a
    simulation's, production's each have their own)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database)
    return runtime_dir / "alerts" / f"{safe}.sqlite"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """Something for one sink to deliver. `key`: entries with the same key supersede each
    other (MQTT retained state: only the newest needs sending)."""

    sink: str
    payload: dict[str, Any]
    key: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    sink: str
    key: str | None
    payload: dict[str, Any]
    created: float
    attempts: int


class AlertStore:
    """See the module docstring. Use as a context manager or call `close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=30, check_same_thread=False, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            version = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            elif version[0] != _SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: alert state schema {version[0]}, this greenmon knows "
                    f"{_SCHEMA_VERSION}; move the file away to start afresh"
                )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the alert state {path}: {exc}") from exc
        self._lock = threading.Lock()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"alert state {self.path}: {exc}") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"alert state {self.path}: {exc}") from exc
                raise

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"alert state {self.path}: {exc}") from exc

    # -- state ----------------------------------------------------------------------------
    def states(self) -> dict[Key, AlertState]:
        rows = self._query(f"SELECT {_ALERT_COLUMNS} FROM alerts")
        return {(r[0], r[1], r[2]): AlertState((r[0], r[1], r[2]), *r[3:]) for r in rows}

    def last_evaluated(self) -> float | None:
        row = self._query("SELECT value FROM meta WHERE key='evaluated'")
        return float(row[0][0]) if row else None

    def digests(self) -> dict[tuple[str, str], str]:
        return {(r[0], r[1]): r[2] for r in self._query("SELECT * FROM subjects")}

    def apply(
        self,
        at: float,
        states: Iterable[AlertState],
        transitions: Iterable[Transition],
        outbox: Iterable[OutboxEntry],
        digests: dict[tuple[str, str], str],
    ) -> None:
        """Record one evaluation at moment `at`, all or nothing."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO alerts ({_ALERT_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        *s.key,
                        s.state,
                        s.level,
                        s.value,
                        s.threshold,
                        s.message,
                        s.since,
                        s.active_since,
                        s.clear_since,
                        s.updated,
                    )
                    for s in states
                ],
            )
            db.executemany(
                "INSERT INTO transitions (at, scope, subject, rule, state, previous, level, "
                "value, threshold, message, notify, recorded) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        t.at,
                        *t.key,
                        t.state,
                        t.previous,
                        t.level,
                        t.value,
                        t.threshold,
                        t.message,
                        int(t.notify),
                        now,
                    )
                    for t in transitions
                ],
            )
            db.executemany(
                "INSERT INTO outbox (sink, key, payload, created) VALUES (?,?,?,?)",
                [(e.sink, e.key, json.dumps(e.payload, ensure_ascii=False), now) for e in outbox],
            )
            db.executemany(
                "INSERT OR REPLACE INTO subjects VALUES (?,?,?)",
                [(scope, subject, d) for (scope, subject), d in digests.items()],
            )
            db.execute("INSERT OR REPLACE INTO meta VALUES ('evaluated', ?)", (repr(at),))

    # -- outbox ---------------------------------------------------------------------------
    def due(self, sink: str, now: float, limit: int) -> list[OutboxRow]:
        """The oldest undelivered rows of `sink`, in order, once the oldest one's next try has
        come (rows never overtake each other); [] before. Rows that a newer row with the same
        key supersedes are marked delivered (never sent)."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET delivered = ?, last_error = 'superseded' "
                "WHERE sink = ? AND delivered IS NULL AND key IS NOT NULL AND id < "
                "(SELECT MAX(o.id) FROM outbox o WHERE o.sink = outbox.sink AND o.key = "
                "outbox.key AND o.delivered IS NULL)",
                (now, sink),
            )
            rows = db.execute(
                "SELECT id, sink, key, payload, created, attempts, next_try FROM outbox "
                "WHERE sink = ? AND delivered IS NULL ORDER BY id LIMIT ?",
                (sink, limit),
            ).fetchall()
        if not rows or rows[0][6] > now:
            return []
        return [OutboxRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in rows]

    def next_try(self, sink: str) -> float | None:
        """When the oldest undelivered row of `sink` is due (None: nothing undelivered)."""
        rows = self._query(
            "SELECT next_try FROM outbox WHERE sink = ? AND delivered IS NULL ORDER BY id LIMIT 1",
            (sink,),
        )
        return float(rows[0][0]) if rows else None

    def delivered(self, ids: Iterable[int], at: float | None = None) -> None:
        ids = list(ids)
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET delivered = ?, last_error = NULL WHERE id = ?",
                [(at or time.time(), i) for i in ids],
            )

    def failed(self, ids: Iterable[int], error: str, next_try: float) -> None:
        ids = list(ids)
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_try = ? "
                "WHERE id = ?",
                [(error[:500], next_try, i) for i in ids],
            )

    def expire(self, older_than: float) -> int:
        """Give up on undelivered rows created before `older_than`; returns how many."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE outbox SET delivered = ?, last_error = 'expired: ' || "
                "COALESCE(last_error, '') WHERE delivered IS NULL AND created < ?",
                (time.time(), older_than),
            )
            return cur.rowcount

    def backlog(self) -> dict[str, dict[str, Any]]:
        """Per sink: undelivered rows, attempts of the oldest, its last error."""
        rows = self._query(
            "SELECT sink, COUNT(*), MAX(attempts), "
            "(SELECT last_error FROM outbox o WHERE o.sink = outbox.sink AND o.delivered IS NULL "
            " ORDER BY o.id LIMIT 1) FROM outbox WHERE delivered IS NULL GROUP BY sink"
        )
        return {r[0]: {"pending": r[1], "attempts": r[2], "last_error": r[3]} for r in rows}

    def delivered_count(self, sink: str) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM outbox WHERE sink = ? AND delivered IS NOT NULL "
            "AND (last_error IS NULL)",
            (sink,),
        )
        return int(rows[0][0])

    # -- history --------------------------------------------------------------------------
    def transitions(self, since: float | None = None) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT id, at, scope, subject, rule, state, previous, level, value, threshold, "
            "message, notify FROM transitions WHERE at >= ? ORDER BY id",
            (since if since is not None else float("-inf"),),
        )
        keys = (
            "id",
            "at",
            "scope",
            "subject",
            "rule",
            "state",
            "previous",
            "level",
            "value",
            "threshold",
            "message",
            "notify",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]
