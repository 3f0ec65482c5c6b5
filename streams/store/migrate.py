"""Copy a store to another backend (``meterseal store migrate --to s3://...``) and prove the copy.

Records keep their partition, offset, leaf index and per-meter sequence; wrapped DEKs keep their key-log
marks; grants are copied; each log's hashes and signed checkpoints are copied as they are (tiles on S3).
Then the copy is audited like ``ledger verify`` and must match the source log by log: same leaves, same
signed sizes, no finding. Running it again copies only what is missing (record ids, hashes past the
copy's size), so an interrupted migration is resumed by running it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ledger.checkpoint import Checkpoint
from ledger.note import Verifier

from streams.exceptions import StoreError
from streams.registry import Registry
from streams.store.audit import audit_store
from streams.store.base import Store
from streams.store.segments import TABLES

REGIONS_DIR = "grants"
MIGRATED_LOGS = ("readings", "bills", "deks", "consent", "models", "subjects", "erasure")
# store objects copied as they are: parties, consent events (the consent log's rows), model versions (the model
# log's rows), the subject-key table and its fence, erasure events; DP budgets are not: they stay in the data dir
# (README "Scale out")
OBJECT_PREFIXES = ("parties/", "consent/events/", "models/", "subjects/", "erasures/")
# what a store rebuilt from the sealed topics must carry over from the store it replaces: nothing on a topic holds
# the customers' subject keys (by design: they must be deletable), nor the erasures that fenced some of them
KEY_PREFIXES, KEY_LOGS = ("subjects/", "erasures/"), ("subjects", "erasure")


@dataclass
class MigrationReport:
    rows: dict[str, int] = field(default_factory=dict)
    deks: int = 0
    grants: int = 0
    objects: int = 0
    hashes: int = 0
    checkpoints: int = 0
    logs: int = 0
    leaves: int = 0


def _regions(source: Store) -> list[str]:
    root = getattr(source, "root", None)
    base = root / REGIONS_DIR if root is not None else None
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base is not None and base.exists() else []


def migrate(source: Store, dest: Store, verifier: Verifier, *, registry: Registry | None = None,
            progress: Callable[[str], None] = lambda _: None) -> MigrationReport:
    report = MigrationReport()
    for key_id in source.dek_ids():  # keys first: a copied record can always be opened
        doc = source.get_dek(key_id)
        report.deks += dest.put_dek(doc)
        if doc.get("leaf_index") is not None:
            dest.mark_dek(key_id, partition=doc["partition"], leaf_index=doc["leaf_index"])
    for region in _regions(source):
        for key_id in source.grant_ids(region):
            report.grants += dest.put_grant(source.get_grant(region, key_id))
    _copy_objects(source, dest, OBJECT_PREFIXES, report)
    for table in TABLES:
        report.rows[table] = 0
        for p in source.partitions(table):
            rows = source.rows(table, p)
            fresh = dest.fresh(table, p, [(r["topic_offset"], r) for r in rows])
            report.rows[table] += dest.write(table, p, fresh)
            progress(f"{table}/p{p}: {len(fresh)} rows")
    _copy_logs(source, dest, MIGRATED_LOGS, report, progress)  # the privacy log stays with the DP budgets
    want = [r for r in audit_store(source, verifier, registry=registry) if r[0].log.split("/")[-2] in MIGRATED_LOGS]
    got = [r for r in audit_store(dest, verifier, registry=registry) if r[0].log.split("/")[-2] in MIGRATED_LOGS]
    problems = [f for _, findings in got for f in findings]
    if problems:
        raise StoreError(f"the copy does not verify: {problems[0]}")
    summary = lambda results: sorted((s.log, s.leaves, s.signed_size, s.checkpoints) for s, _ in results)  # noqa: E731
    if summary(got) != summary(want):
        raise StoreError("the copy's logs differ from the source's: run `meterseal ledger verify` on both")
    report.logs, report.leaves = len(got), sum(s.leaves for s, _ in got)
    return report


def carry_keys(source: Store, dest: Store) -> MigrationReport:
    """Copy the subject-key table, the erasure fence and events and their logs from ``source`` to ``dest``: what a
    store rebuilt from the sealed topics needs to open its records (``meterseal store rebuild``)."""
    report = MigrationReport()
    _copy_objects(source, dest, KEY_PREFIXES, report)
    _copy_logs(source, dest, KEY_LOGS, report, lambda _: None)
    return report


def _copy_objects(source: Store, dest: Store, prefixes: tuple[str, ...], report: MigrationReport) -> None:
    for prefix in prefixes:
        for key in source.blobs.list(prefix):
            name = key.rsplit("/", 1)[-1]
            if prefix == "models/" and not key.startswith("models/exclusions/") and \
                    not (name.startswith("round-") and name.endswith((".json", ".weights"))):
                continue  # a run's history.json and plot stay on the machine that ran it
            if not dest.blobs.exists(key):
                data = source.blobs.get(key)
                if data is not None:  # (deleted meanwhile: an erasure)
                    dest.blobs.put(key, data)
                    report.objects += 1


def _copy_logs(source: Store, dest: Store, tables: tuple[str, ...], report: MigrationReport,
               progress: Callable[[str], None]) -> None:
    for table, p in source.log_keys():
        if table not in tables:
            continue
        src, dst = source.hash_store(table, p), dest.hash_store(table, p)
        hashes, have = src.read(), dst.read()
        if hashes[:len(have)] != have:
            raise StoreError(f"{table}/p{p}: the destination's log differs from the source's; copy into an empty store")
        dst.append(hashes[len(have):])
        report.hashes += len(hashes) - len(have)
        copied = set(dest.checkpoint_store(table, p).all())
        for note in source.checkpoint_store(table, p).all():
            if note not in copied:
                dest.checkpoint_store(table, p).put(Checkpoint.from_note(note).size, note)
                report.checkpoints += 1
        progress(f"ledger {table}/p{p}: {len(hashes)} hashes")
