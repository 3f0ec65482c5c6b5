"""Snapshot expiry of the Iceberg tables (``meterseal store expire``; workers run it every sixth of
``METERSEAL_SNAPSHOT_KEEP_S``).

Every streaming commit adds a snapshot, and each commit rewrites the table's metadata file, which lists every
snapshot: without expiry a commit costs more the older the table is (measured 2026-12-01 on SeaweedFS, 10-row
commits: ~1 ms more a commit per snapshot kept; 657 ms a commit around the 550th without expiry, 151 ms with).
A worker commits every ``store_flush_s`` per partition, so that is minutes, not months.

``expire`` removes the snapshots older than the retention from the metadata — always a prefix of the chain,
ordered by sequence number (clocks of different machines need not agree), never the current one — in one
commit that carries no requirement: the catalog applies it to its newest metadata, so appends committed
meanwhile are kept (a conflict on the pointer swap is retried). Then it deletes what no remaining snapshot can
reach, which is only:

- each expired snapshot's manifest list (every snapshot has its own);
- manifests an expired snapshot listed that the oldest remaining snapshot does not list (rewritten by
  compaction or a manifest merge: a manifest is never listed again once dropped);
- data files an expired snapshot deleted (compaction's rewritten files): a file deleted at snapshot S is in
  no snapshot after S.

Old metadata files go by the tables' ``write.metadata.delete-after-commit.enabled``, and appends merge their
manifests once 100 pile up (``commit.manifest-merge.enabled``): both set here on tables made before them.
Readers pinned to a snapshot older than the retention lose it (workers keep a minute: ``METERSEAL_SNAPSHOT_KEEP_S``);
a writer's append or dedup read whose snapshot was expired under it starts again (``IcebergStore``).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from streams.exceptions import StoreError
from streams.store.iceberg import MAINTENANCE_PROPERTIES
from streams.store.segments import TABLES


def expire(store: Any, table: str, *, older_than_s: float, now: float | None = None,
           progress: Callable[[str], None] = lambda _: None) -> dict:
    """Expire ``table``'s snapshots committed more than ``older_than_s`` ago; returns counts."""
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.manifest import ManifestEntryStatus

    if table not in TABLES:
        raise StoreError(f"unknown table {table!r}: {', '.join(TABLES)}")
    out = {"table": table, "expired": 0, "kept": 0, "files_deleted": 0}
    tbl = store._table_or_none(table)
    if tbl is None:
        return out
    tbl.refresh()
    if any(tbl.metadata.properties.get(k) != v for k, v in MAINTENANCE_PROPERTIES.items()):  # a table made earlier
        with tbl.transaction() as tx:
            tx.set_properties(MAINTENANCE_PROPERTIES)
        tbl.refresh()
    head = tbl.current_snapshot()
    if head is None:
        return out
    cutoff_ms = int(((time.time() if now is None else now) - older_than_s) * 1000)
    chain = sorted(tbl.metadata.snapshots, key=lambda s: s.sequence_number)
    protected = {ref.snapshot_id for ref in tbl.metadata.refs.values()}
    # the first snapshot (in commit order) to keep: the oldest one inside the window, or the head; all before it go
    cut = next((i for i, s in enumerate(chain) if s.timestamp_ms >= cutoff_ms or s.snapshot_id in protected), len(chain) - 1)
    expired, oldest_kept = chain[:cut], chain[cut]
    out["kept"] = len(chain) - cut
    if not expired:
        return out
    kept_manifests = {m.manifest_path for m in oldest_kept.manifests(tbl.io)}
    doomed: set[str] = set()
    for snap in expired:
        doomed.add(snap.manifest_list)
        for manifest in snap.manifests(tbl.io):
            if manifest.manifest_path not in kept_manifests:
                doomed.add(manifest.manifest_path)
            deletes = manifest.deleted_files_count is None or manifest.deleted_files_count > 0
            if manifest.added_snapshot_id == snap.snapshot_id and deletes:
                doomed.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(tbl.io, discard_deleted=False)
                              if e.status == ManifestEntryStatus.DELETED)
    ids = [s.snapshot_id for s in expired]
    for attempt in range(10):
        try:
            tbl.maintenance.expire_snapshots().by_ids(ids).commit()
            break
        except CommitFailedException:  # another writer swapped the pointer first: apply it to the newer metadata
            if attempt == 9:
                raise StoreError(f"{table}: could not commit the snapshot expiry (other writers kept winning); "
                                 "it is retried at the next run") from None
            time.sleep(0.05 * 2 ** attempt)
            tbl.refresh()
    for path in sorted(doomed):
        try:
            tbl.io.delete(path)
        except FileNotFoundError:  # removed already: an erasure's orphan clean-up took a file a delete had dropped
            pass
    out.update(expired=len(ids), files_deleted=len(doomed))
    progress(f"{table}: {len(ids)} snapshots expired, {out['kept']} kept, {len(doomed)} files deleted")
    return out


def expire_store(store: Any, *, older_than_s: float, tables: tuple[str, ...] = tuple(TABLES),
                 progress: Callable[[str], None] = lambda _: None) -> dict | None:
    """``expire`` every table, by one process at a time (None: another holds the store's expiry lock)."""
    if not hasattr(store, "try_locked"):
        raise StoreError("snapshot expiry is for a store on object storage (METERSEAL_STORE=s3://...): the local "
                         "store keeps no snapshots")
    start = time.perf_counter()
    with store.try_locked("expire") as mine:
        if not mine:
            return None
        results = {t: expire(store, t, older_than_s=older_than_s, progress=progress) for t in tables}
    return {"tables": results, "seconds": round(time.perf_counter() - start, 1)}


def expire_in_worker(store: Any, *, older_than_s: float, log: Any) -> dict | None:
    """A worker's periodic expiry: never raises (maintenance failing must not stop ingest; the next run retries)."""
    try:
        report = expire_store(store, older_than_s=older_than_s)
    except Exception as exc:  # noqa: BLE001 - store or catalog trouble: the writers will report it themselves
        log.warning("snapshot expiry failed (%s: %s): retried at the next run", type(exc).__name__, exc)
        return None
    if report is not None:
        done = {t: r["expired"] for t, r in report["tables"].items() if r["expired"]}
        if done:
            log.info("expired Iceberg snapshots older than %.0f s: %s (%.1f s)", older_than_s, done, report["seconds"])
    return report
