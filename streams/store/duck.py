"""One in-process DuckDB database for short read-only queries, and a cheap connection to it per query.

Opening a DuckDB database costs ~26–33 ms here (DuckDB 2.0, measured: `duckdb.connect()` median of 9); a cursor
on an open one costs nothing. A request that only binds a view and runs a query or two (the fleet chart) spends
most of its time opening the database, so it takes ``cursor()`` instead. A cursor is its own connection to the
shared database: what it binds must be ``TEMP`` views (or ``register``-ed Arrow objects), which are the
cursor's own and go with it; a plain ``CREATE VIEW`` would be shared with every other cursor.
"""

from __future__ import annotations

import threading

import duckdb

_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def cursor() -> duckdb.DuckDBPyConnection:
    """A new connection to the process's shared in-memory database (close it when done)."""
    global _database
    with _lock:
        if _database is None:
            _database = duckdb.connect()
        return _database.cursor()
