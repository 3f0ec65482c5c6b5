"""Deleting rows from the Iceberg tables of an ``s3://`` store (erasure and retention), and the files no snapshot
reaches any more.

``delete_rows`` commits one Iceberg OVERWRITE: pyiceberg rewrites each data file holding a matching row without it
(copy-on-write) and deletes the files left with none, retried over newer snapshots while workers append. The
old files stay reachable from the snapshots before it — so erasure then expires every snapshot but the newest
(``streams.store.expire``) and ``remove_orphans`` deletes data files no snapshot lists (written by commits that
failed): only then are the bytes gone from object storage. ``delete_objects`` removes wrapped DEKs.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable

import pyarrow.parquet as pq

from streams.exceptions import StoreError
from streams.store.segments import DELETABLE_BY


def delete_rows(store: Any, table: str, column: str, values: Iterable[str], *, record_ids: Iterable[str] | None = None,
                attempts: int = 20) -> int:
    """Delete the rows of ``table`` whose ``column`` is one of ``values`` (and, given ``record_ids``, whose record id
    is one of them); returns how many."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException
    from pyiceberg.expressions import And, In

    wanted = sorted({v for v in values if v is not None})
    if column not in DELETABLE_BY:
        raise StoreError(f"rows are deleted by {', '.join(DELETABLE_BY)}, not {column!r}")
    tbl = store._table_or_none(table)
    if tbl is None or not wanted or record_ids is not None and not set(record_ids):
        return 0
    where = In(column, wanted) if record_ids is None else And(In(column, wanted), In("record_id", set(record_ids)))
    before = store.scan(table, where).num_rows
    if not before:
        return 0
    for attempt in range(attempts):
        try:
            tbl.refresh()
            tbl.delete(delete_filter=where)
            break
        except (CommitFailedException, ValidationException, FileNotFoundError):
            if attempt == attempts - 1:
                raise StoreError(f"{table}: {attempts} deletes in a row lost to other writers; run it again") from None
            time.sleep(min(1.0, 0.02 * 2 ** attempt) * (0.5 + int.from_bytes(os.urandom(1), "big") / 255))
    return before - store.scan(table, where).num_rows


def referenced_files(tbl: Any) -> set[str]:
    """Every data file, manifest and manifest list some snapshot of ``tbl`` still reaches."""
    found: set[str] = set()
    for snap in tbl.metadata.snapshots:
        found.add(snap.manifest_list)
        for manifest in snap.manifests(tbl.io):
            found.add(manifest.manifest_path)
            found.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True))
    return found


def remove_orphans(store: Any, table: str, *, older_than_s: float = 600.0, holding: tuple[str, Iterable[str]] | None = None,
                   now: float | None = None) -> int:
    """Delete the table's data files no snapshot reaches: those older than ``older_than_s`` (a younger one may be an
    append not yet committed), and younger ones too when they hold one of ``holding = (column, values)`` (an
    erased subject's rows: such an append is refused anyway). Returns how many files went."""
    tbl = store._table_or_none(table)
    if tbl is None:
        return 0
    tbl.refresh()
    keep = referenced_files(tbl)
    fs = store.filesystem()
    base = tbl.metadata.location.removeprefix("s3://").rstrip("/") + "/data"
    cutoff = (time.time() if now is None else now) - older_than_s
    from pyarrow import fs as pafs

    removed = 0
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet") or f"s3://{info.path}" in keep:
            continue
        old = info.mtime is not None and info.mtime.timestamp() < cutoff
        if not old and holding is not None:
            column, values = holding
            wanted = set(values)
            found = pq.read_table(info.path, columns=[column], filesystem=fs).column(column).to_pylist()
            old = any(v in wanted for v in found)
        if old:
            fs.delete_file(info.path)
            removed += 1
    return removed


def delete_objects(store: Any, keys: Iterable[str]) -> int:
    return sum(int(store.blobs.delete(key)) for key in keys)
