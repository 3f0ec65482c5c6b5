"""PostgreSQL session advisory locks for the object-storage store: one partition's writers at a time, one
snapshot expiry at a time — held by the catalog's server, released by it when a killed worker's connection
drops, never a lock file.

Each thread takes its locks on its own connection. With one connection per process, the CI run of 2026-12-01
deadlocked two workers after a rebalance: worker A's event loop waited on the server for partition 2 (held by
B) while holding the connection, so A's store thread could not send the unlock of partition 1 it held, and B
was stuck the same way the other way round — a wait inside the client that PostgreSQL's deadlock detector
cannot see.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from typing import Any, Iterator


class AdvisoryLocks:
    """Named locks on one PostgreSQL server (``dsn``), namespaced by ``scope`` (the store's location)."""

    def __init__(self, dsn: str, scope: str) -> None:
        self.dsn, self.scope = dsn, scope
        self._local = threading.local()
        self._all: list[Any] = []
        self._guard = threading.Lock()

    def key(self, name: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{self.scope}/{name}".encode()).digest()[:8], "big", signed=True)

    @contextlib.contextmanager
    def held(self, name: str) -> Iterator[None]:
        """Wait for the lock ``name`` and hold it for the block."""
        key = self.key(name)
        cur = self._execute("SELECT pg_advisory_lock(%s)", key)
        try:
            yield
        finally:
            self._unlock(cur.connection, key)

    @contextlib.contextmanager
    def tried(self, name: str) -> Iterator[bool]:
        """Take the lock ``name`` if nobody holds it; the block learns whether it did."""
        key = self.key(name)
        cur = self._execute("SELECT pg_try_advisory_lock(%s)", key)
        mine = bool(cur.fetchone()[0])
        try:
            yield mine
        finally:
            if mine:
                self._unlock(cur.connection, key)

    def _execute(self, sql: str, key: int):
        """Run a lock statement on this thread's connection; a connection the server dropped since (restart) is
        replaced once (its locks went with it)."""
        import psycopg

        con = self.connection()
        try:
            return con.execute(sql, (key,))
        except psycopg.OperationalError:
            if not (con.closed or con.broken):
                raise
            con.close()
        return self.connection().execute(sql, (key,))

    @staticmethod
    def _unlock(con, key: int) -> None:
        """Release a lock. If the connection died meanwhile (the server restarted or stopped) the server has
        released the lock with the session: nothing to undo, and raising here would hide what the block did."""
        import psycopg

        try:
            con.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except psycopg.OperationalError:
            if not con.closed and not con.broken:
                raise
            con.close()  # the next lock opens a new connection

    def connection(self):
        """This thread's lock connection (opened on first use)."""
        import psycopg

        con = getattr(self._local, "con", None)
        if con is None or con.closed:
            con = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            self._local.con = con
            with self._guard:
                self._all = [c for c in self._all if not c.closed] + [con]
        return con

    def close(self) -> None:
        with self._guard:
            cons, self._all = self._all, []
        for con in cons:
            con.close()
