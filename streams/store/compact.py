"""Compaction of the Iceberg tables (``meterseal store compact``): each partition's small files, one per
streaming commit, rewritten as one file, while workers keep appending.

pyiceberg 0.12 has no ``rewrite_data_files``; this is the same operation by hand: for every partition
(one day token under the default spec) holding at least ``min_files`` data files in the current snapshot,
read exactly those files, write their rows as new files (sorted by sealed-topic partition and leaf), and
commit one OVERWRITE snapshot that deletes *those files by name* and adds the new ones.

Safe against concurrent writers: the commit is optimistic. A worker's append committed meanwhile makes
the catalog refuse it; pyiceberg then redoes the overwrite over the newer snapshot (the same named files
deleted, the appended files untouched), so nothing appended is lost. The tables' ``write.delete.isolation-level``
is ``snapshot`` (set here on older tables) so that an append elsewhere is not taken for a conflict (under
pyiceberg's default, ``serializable``, any file added meanwhile anywhere in the table aborts it). If a named file is gone by then
(another compactor rewrote it), pyiceberg's required-delete check raises ``ValidationException`` and the
partition is skipped, so rows are never doubled. Readers holding an older snapshot keep reading the old
files (nothing is physically deleted here).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from typing import Any, Callable

import pyarrow as pa

from streams.exceptions import StoreError
from streams.store.iceberg import COMPACTION_ISOLATION
from streams.store.segments import LEDGERED, TABLES, arrow_schema


def _partition_key(data_file: Any, spec_id: int) -> tuple:
    record = data_file.partition
    return (spec_id, *(record[i] for i in range(len(record))))


def compact(store: Any, table: str, *, min_files: int = 8, max_partitions: int | None = None,
            before_commit: Callable[[], None] | None = None, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Rewrite the partitions of ``table`` that hold ``min_files`` or more data files; returns counts.

    ``store`` is an ``IcebergStore``; ``before_commit`` runs just before each commit (the tests race a
    writer there)."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files

    if not hasattr(store, "pruned"):
        raise StoreError("compaction is for a store on object storage (METERSEAL_STORE=s3://...): the local "
                         "store's segments are read through DuckDB's Parquet reader and need none")
    if table not in TABLES:
        raise StoreError(f"unknown table {table!r}: {', '.join(TABLES)}")
    tbl = store._table_or_none(table)
    out = {"table": table, "files_before": 0, "files_after": 0, "partitions": 0, "rewritten": 0, "skipped": 0,
           "rows": 0}
    if tbl is None:
        return out
    tbl.refresh()
    snap = tbl.current_snapshot()
    if snap is None:
        return out
    if tbl.metadata.properties.get(COMPACTION_ISOLATION) != "snapshot":  # a table made before compaction existed
        with tbl.transaction() as tx:
            tx.set_properties({COMPACTION_ISOLATION: "snapshot"})
        tbl.refresh()
    groups: dict[tuple, list] = defaultdict(list)
    for task in tbl.scan(snapshot_id=snap.snapshot_id).plan_files():
        groups[_partition_key(task.file, task.file.spec_id)].append(task)
    out["files_before"] = sum(len(g) for g in groups.values())
    out["partitions"] = len(groups)
    todo = sorted((k for k, g in groups.items() if len(g) >= min_files), key=lambda k: -len(groups[k]))
    for key in todo[:max_partitions]:
        tasks = groups[key]
        tbl.refresh()
        rows = ArrowScan(tbl.metadata, tbl.io, tbl.schema(), AlwaysTrue()).to_table(tasks)
        rows = rows.sort_by([("topic_partition", "ascending"), (TABLES[table][1], "ascending")] if table not in LEDGERED
                            else [("topic_partition", "ascending"), ("leaf_index", "ascending")])
        rows = rows.cast(pa.schema([f.with_nullable(True) for f in arrow_schema(table)]))
        new_files = list(_dataframe_to_data_files(tbl.metadata, rows, tbl.io, write_uuid=uuid.uuid4()))
        if before_commit:
            before_commit()
        try:
            tx = tbl.transaction()
            with tx.update_snapshot(snapshot_properties={"meterseal.compacted": str(len(tasks))}).overwrite() as ow:
                for task in tasks:
                    ow.delete_data_file(task.file)
                for data_file in new_files:
                    ow.append_data_file(data_file)
            tx.commit_transaction()
        except (ValidationException, CommitFailedException) as exc:  # rewritten by another compactor: skip it
            out["skipped"] += 1
            progress(f"{table} partition {key[1:]}: skipped ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        out["rewritten"] += 1
        out["rows"] += rows.num_rows
        progress(f"{table} partition {key[1:]}: {len(tasks)} files -> {len(new_files)} ({rows.num_rows} rows)")
    tbl.refresh()
    out["files_after"] = sum(1 for _ in tbl.scan().plan_files())
    return out


def compact_store(store: Any, *, tables: tuple[str, ...] = tuple(TABLES), min_files: int = 8,
                  progress: Callable[[str], None] = lambda _: None) -> dict:
    """``compact`` every table of the store; with the time taken."""
    start = time.perf_counter()
    results = {t: compact(store, t, min_files=min_files, progress=progress) for t in tables}
    return {"tables": results, "seconds": round(time.perf_counter() - start, 1)}
