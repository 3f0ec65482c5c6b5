"""One store interface, two backends: ``SegmentStore`` (local Parquet segments, the embedded default) and
``IcebergStore`` (Iceberg tables and tlog tiles on S3-compatible storage), chosen by ``METERSEAL_STORE``.

Every reader and writer goes through ``Store``; ``tests/streams/store/test_contract.py`` runs the same
tests against both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ContextManager, Iterable, Protocol, runtime_checkable

import duckdb
import pyarrow as pa

from ledger.log import CheckpointStore
from ledger.storage import HashStore

from streams.store.segments import TABLES, SegmentStore, arrow_schema
from streams.store.segments import connect as connect_segments


@runtime_checkable
class Store(Protocol):
    """What the worker (``streams.pipeline``), the readers and the audits need from a store."""

    root: Path  # this process's own local files (the detector's models); the whole store when local
    blobs: Any  # small named objects in the store (get/exists/create/put/list): ``streams.store.objects``

    # writing, idempotent by record id, one writer per (table, partition) inside ``locked``
    def fresh(self, table: str, partition: int, rows: Iterable[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]: ...
    def number(self, table: str, partition: int, rows: list[dict[str, Any]], first_leaf: int) -> None: ...
    def write(self, table: str, partition: int, rows: list[dict[str, Any]]) -> int: ...
    def append(self, table: str, partition: int, rows: Iterable[tuple[int, dict[str, Any]]]) -> int: ...
    def max_leaf(self, table: str, partition: int) -> int: ...
    def locked(self, table: str, partition: int) -> ContextManager[None]: ...

    # reading: one consistent snapshot as Arrow
    def arrow(self, table: str) -> pa.Table: ...
    def is_empty(self, table: str) -> bool: ...
    def find(self, table: str, record_id: str) -> dict[str, Any] | None: ...
    def rows(self, table: str, partition: int, *, min_leaf: int | None = None) -> list[dict[str, Any]]: ...
    def partitions(self, table: str) -> list[int]: ...

    # the ledger
    def hash_store(self, table: str, partition: int) -> HashStore: ...
    def checkpoint_store(self, table: str, partition: int) -> CheckpointStore: ...
    def log_keys(self) -> list[tuple[str, int]]: ...

    # deleting (erasure, retention): by a token or id column, idempotent
    def delete_rows(self, table: str, column: str, values: Iterable[str], *,
                    record_ids: Iterable[str] | None = None) -> int: ...
    def delete_dek(self, key_id: str) -> int: ...

    # wrapped DEKs and region grants
    def put_dek(self, wrapped: dict[str, Any]) -> bool: ...
    def mark_dek(self, key_id: str, *, partition: int, leaf_index: int) -> dict[str, Any]: ...
    def get_dek(self, key_id: str) -> dict[str, Any] | None: ...
    def dek_ids(self) -> list[str]: ...
    def dek_rows(self, partition: int | None = None) -> list[dict[str, Any]]: ...
    def put_grant(self, grant: dict[str, Any], *, replace: bool = False) -> bool: ...
    def get_grant(self, region: str, key_id: str) -> dict[str, Any] | None: ...
    def grant_ids(self, region: str) -> list[str]: ...


def is_remote(location: Any) -> bool:
    return isinstance(location, str) and location.startswith("s3://")


def open_store(location: Store | str | Path, *, catalog: str | None = None, work_dir: Path | str | None = None,
               create: bool = True) -> Store:
    """The store at ``location``: a ``Store`` (returned as is), a local directory, or ``s3://BUCKET/PREFIX``
    (then ``catalog``, default ``$METERSEAL_CATALOG``, is the PostgreSQL Iceberg catalog and ``work_dir``
    this process's local files)."""
    if not isinstance(location, (str, Path)):
        return location
    if is_remote(location):
        from streams.store.iceberg import IcebergStore

        return IcebergStore(str(location), catalog or os.environ.get("METERSEAL_CATALOG"),
                            work_dir=work_dir or Path("meterseal-data") / "store", create=create)
    return SegmentStore(location)


def connect(location: Store | str | Path, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with views ``readings``, ``bills`` and ``dlq`` over the store.

    Local: views over the segment files (later segments are seen too). Object storage: each table's
    current Iceberg snapshot read as Arrow and registered (DuckDB needs no extension; a reader sees one
    consistent snapshot per table, however many writers commit meanwhile — connect again for newer ones).
    """
    if isinstance(location, SegmentStore):
        location = location.root
    if isinstance(location, (str, Path)) and not is_remote(location):
        return connect_segments(location, con)
    store = open_store(location, create=False) if isinstance(location, str) else location
    con = con or duckdb.connect()
    for table in TABLES:
        try:
            data = store.arrow(table)
        except Exception:  # noqa: BLE001 - a table no worker created yet reads as empty
            data = arrow_schema(table).empty_table()
        con.register(f"_{table}_snapshot", data)
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM _{table}_snapshot")
    return con


def rows_matching(store: Store, table: str, any_of: dict[str, Iterable[str]],
                  columns: list[str] | None = None) -> pa.Table:
    """The rows of ``table`` where some ``column IN values`` of ``any_of`` holds (OR), as Arrow, read with each
    backend's pruning: Parquet Bloom filters locally, Iceberg partitions and column bounds on S3 (never a whole
    table). Erasure and retention find what to delete with it."""
    wanted = {column: sorted({v for v in values if v is not None}) for column, values in any_of.items()}
    wanted = {column: values for column, values in wanted.items() if values}
    if not wanted or store.is_empty(table):
        empty = arrow_schema(table).empty_table()
        return empty.select(columns) if columns else empty
    if isinstance(store, SegmentStore):
        con = duckdb.connect()
        try:
            cond = " OR ".join(f"{column} IN (SELECT unnest(?))" for column in wanted)
            picked = ", ".join(columns) if columns else "*"
            files = [str(p) for p in store.segments(table)]
            return con.sql(f"SELECT {picked} FROM read_parquet(?, union_by_name = true) WHERE {cond}",
                           params=[files, *wanted.values()]).to_arrow_table()
        finally:
            con.close()
    from pyiceberg.expressions import In, Or

    terms = [In(column, set(values)) for column, values in wanted.items()]
    found = store.scan(table, terms[0] if len(terms) == 1 else Or(*terms))
    return found.select(columns) if columns else found


def distinct_values(store: Store, table: str, column: str) -> set[Any]:
    """Every distinct value of one column (reading only that column)."""
    if store.is_empty(table):
        return set()
    if isinstance(store, SegmentStore):
        con = duckdb.connect()
        try:
            files = [str(p) for p in store.segments(table)]
            return {r[0] for r in con.execute(f"SELECT DISTINCT {column} FROM read_parquet(?, union_by_name = true)",
                                              [files]).fetchall()}
        finally:
            con.close()
    tbl = store._table_or_none(table)
    if tbl is None:
        return set()
    tbl.refresh()
    return set(tbl.scan(selected_fields=(column,)).to_arrow().column(column).unique().to_pylist())
