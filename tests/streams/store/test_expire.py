"""Snapshot expiry on a real S3 server and catalog: old snapshots leave the metadata, only files no remaining
snapshot reaches are deleted, every row stays readable and deduplicated, and writers appending meanwhile lose
nothing."""

from __future__ import annotations

import threading

import pytest

from streams.exceptions import ConfigError
from streams.settings import Settings
from streams.store.compact import compact
from streams.store.expire import expire, expire_store
from streams.store.iceberg import IcebergStore
from streams.store.objects import s3_client

from .test_iceberg import _dlq_rows

pytestmark = pytest.mark.objectstore


def _objects(store: IcebergStore, table: str) -> set[str]:
    prefix = f"{store.prefix}/warehouse/{store.namespace}/{table}/"
    pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix)
    return {f"s3://{store.bucket}/{o['Key']}" for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")}


def _reachable(store: IcebergStore, table: str) -> set[str]:
    """Every file some snapshot in the metadata still needs (manifest lists, manifests, live data files)."""
    tbl = store._table(table)
    tbl.refresh()
    out = set()
    for snap in tbl.metadata.snapshots:
        out.add(snap.manifest_list)
        for manifest in snap.manifests(tbl.io):
            out.add(manifest.manifest_path)
            out.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(tbl.io))
    return out


def test_expiry_keeps_every_row_and_deletes_only_what_no_snapshot_reaches(objectstore, s3_location, tmp_path):
    store = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "w")
    for r in range(6):
        store.write("dlq", 0, _dlq_rows(0, r * 10, 10))
    assert compact(store, "dlq", min_files=2)["rewritten"] == 1  # six files -> one: the six become garbage later
    for r in range(6, 9):
        store.write("dlq", 1, _dlq_rows(1, r * 10, 10))
    before = _objects(store, "dlq")
    report = expire(store, "dlq", older_than_s=0)
    assert report["expired"] == 9 and report["kept"] == 1  # ten commits: all but the head
    after = _objects(store, "dlq")
    reachable = _reachable(store, "dlq")
    assert reachable <= after, "a file a snapshot needs was deleted"
    leftovers = {p for p in after - reachable if not p.endswith(".metadata.json")}
    assert leftovers == set(), leftovers
    assert len(before - after) == report["files_deleted"] >= 9 + 6  # manifest lists, and the compacted files
    reader = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "r")
    assert reader.scan("dlq").num_rows == 90
    assert reader.fresh("dlq", 0, list(enumerate(_dlq_rows(0, 0, 60)))) == []  # still known: not stored twice
    assert expire(store, "dlq", older_than_s=0)["expired"] == 0  # nothing left to do


def test_writers_appending_during_expiry_lose_nothing(objectstore, s3_location, tmp_path):
    a = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "a")
    b = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "b")
    tbl = a._table("dlq")
    with tbl.transaction() as tx:  # merge manifests often, so merges race the expiry too
        tx.set_properties({"commit.manifest.min-count-to-merge": "4"})
    errors: list[BaseException] = []

    def writer(store, partition):
        try:
            for r in range(25):
                store.write("dlq", partition, _dlq_rows(partition, r * 4, 4))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(a, 0)), threading.Thread(target=writer, args=(b, 1))]
    for t in threads:
        t.start()
    expired = 0
    while any(t.is_alive() for t in threads):
        expired += expire(IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "c"), "dlq",
                          older_than_s=0)["expired"]
    for t in threads:
        t.join()
    assert not errors, errors
    got = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "d").scan("dlq").column("topic_partition").to_pylist()
    assert (got.count(0), got.count(1)) == (100, 100)
    assert expired > 0


def test_one_process_expires_at_a_time(objectstore, s3_location, tmp_path):
    a = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "a")
    b = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "b")
    with a.try_locked("expire") as mine:
        assert mine
        assert expire_store(b, older_than_s=0) is None  # b is another session: it must not start
    assert expire_store(b, older_than_s=0) is not None


def test_the_retention_setting_refuses_a_window_no_reader_could_use():
    with pytest.raises(ConfigError, match="METERSEAL_SNAPSHOT_KEEP_S"):
        Settings.from_env({"METERSEAL_SNAPSHOT_KEEP_S": "5"})
    assert Settings.from_env({}).snapshot_keep_s == 60
    assert Settings.from_env({"METERSEAL_SNAPSHOT_KEEP_S": "0"}).snapshot_keep_s == 0
