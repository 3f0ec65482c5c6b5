"""The notifier's durable state: one SQLite file (``<data-dir>/notify/state.sqlite3``), written in transactions.

Tables: ``seen`` (alert ids already taken: a redelivered alert changes nothing), ``groups`` and ``alerts`` (what
each notification group holds and when it is next due), ``outbox`` (each notification, from decided to sent: a
worker restarted between deciding and sending sends it then, once). A notification's id is derived from its group
and sequence number, so a notification re-sent after a crash mid-send carries the same id
(``X-Meterseal-Notification-Id``, an email's ``Message-ID``) and a receiver can drop the copy.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (alert_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    group_key TEXT PRIMARY KEY, route TEXT NOT NULL, receiver TEXT NOT NULL, labels TEXT NOT NULL,
    created REAL NOT NULL, next_flush REAL, last_notified REAL, last_digest TEXT, seq INTEGER NOT NULL DEFAULT 0,
    group_wait REAL NOT NULL, group_interval REAL NOT NULL, repeat_interval REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    group_key TEXT NOT NULL, fingerprint TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
    starts_at REAL NOT NULL, last_seen REAL NOT NULL, resolved_at REAL, notified INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_key, fingerprint));
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, receiver TEXT NOT NULL, group_key TEXT NOT NULL, status TEXT NOT NULL, payload BLOB NOT NULL,
    alerts INTEGER NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    last_error TEXT, sent_at REAL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sent_at, next_at);
"""


class NotifyState:
    """The SQLite database, one connection shared under a lock (the notifier's agent and its delivery task run on
    one event loop, delivery in a thread)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute("PRAGMA secure_delete=ON")  # a deleted row's bytes are overwritten (erasure)
        self._con.executescript(SCHEMA)
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it is kept, or none of it (a crash rolls back)."""
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and empty it (after an erasure: no old page stays there)."""
        with self._lock:
            self._con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._con.close()
