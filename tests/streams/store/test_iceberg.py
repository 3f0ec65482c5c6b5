"""The object-storage backend alone: bad configuration fails before writing anything, tiles and
checkpoints are write-once on a real S3 server (SeaweedFS answers 412), tampering with a tile or a data
file is found by the audit."""

from __future__ import annotations

from streams import capabilities

import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ledger.tiles import Fenced, TileCheckpoints, TileHashStore
from streams.exceptions import StoreError
from streams.store.base import open_store
from streams.store.audit import audit_store
from streams.store.iceberg import IcebergStore
from streams.store.objects import S3Blobs, s3_client

from .test_contract import keys, load, pipeline_for, sealed_bills, seed_rows  # noqa: F401 - fixtures

pytestmark = pytest.mark.objectstore


def _objects(objectstore, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def _tables(objectstore) -> int:
    import psycopg

    with psycopg.connect(objectstore.catalog.replace("+psycopg", "")) as con:
        try:
            return con.execute("SELECT count(*) FROM iceberg_tables").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0


@pytest.mark.parametrize("case", ["unreachable endpoint", "wrong credentials", "missing bucket", "catalog down"])
def test_bad_configuration_is_a_clear_error_and_writes_nothing(case, objectstore, s3_location, monkeypatch, tmp_path):
    bucket = s3_location.split("/")[2]
    catalog = objectstore.catalog
    tables_before = _tables(objectstore)
    location = s3_location
    if case == "unreachable endpoint":
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:15999")
        expect = "cannot reach the object store"
    elif case == "wrong credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        expect = "refused the credentials"
    elif case == "missing bucket":
        location = "s3://no-such-bucket-here/x"
        expect = "does not exist"
    else:
        catalog = catalog.replace(f":{objectstore.pg_port}/", ":15998/")
        expect = "cannot reach the Iceberg catalog"
    with pytest.raises(StoreError, match=expect):
        IcebergStore(location, catalog, work_dir=tmp_path)
    monkeypatch.undo()
    assert _objects(objectstore, bucket) == []
    assert _tables(objectstore) == tables_before
    assert "no-such-bucket-here" not in [b["Name"] for b in s3_client().list_buckets()["Buckets"]]


def test_s3_conditional_writes_fence_a_second_tile_writer(objectstore, s3_location):
    bucket = s3_location.split("/")[2]
    blobs = S3Blobs(s3_client(), bucket, "fence")
    assert blobs.create("k", b"1") and not blobs.create("k", b"2") and blobs.get("k") == b"1"  # HTTP 412
    a, b = TileHashStore(blobs, "log"), TileHashStore(blobs, "log")
    a.append([bytes([i % 256]) * 32 for i in range(300)])
    b.size()
    a.append([b"a" * 32])
    with pytest.raises(Fenced):
        b.append([b"b" * 32] * 3)
    assert TileHashStore(blobs, "log").read()[-1] == b"a" * 32 and TileHashStore(blobs, "log").size() == 301
    TileCheckpoints(blobs, "log").put(301, "note one")
    with pytest.raises(Fenced):
        TileCheckpoints(blobs, "log").put(301, "note two")
    assert TileCheckpoints(blobs, "log").all() == ["note one"]


def test_a_tampered_tile_or_data_file_is_found(objectstore, s3_location, keys, tmp_path, seed_rows):  # noqa: F811
    pipeline = pipeline_for(s3_location, keys, tmp_path)
    load(pipeline, *sealed_bills(pipeline, seed_rows[:40]))
    store, verifier = pipeline.store, keys[1].ledger_verifier
    assert [f for _, fs in audit_store(store, verifier, registry=capabilities.registry()) for f in fs] == []
    # a data file rewritten in place with one ciphertext byte changed
    tbl = store._table("bills")
    path = next(iter(tbl.scan().plan_files())).file.file_path.removeprefix("s3://")
    fs = store.filesystem()
    data = pq.read_table(path, filesystem=fs)
    env = data.column("envelope").to_pylist()
    env[0] = env[0][:-1] + bytes([env[0][-1] ^ 1])
    original = fs.open_input_file(path).read()
    i = data.schema.get_field_index("envelope")  # same field (and Iceberg field id), one byte changed
    pq.write_table(data.set_column(i, data.schema.field(i), pa.array(env, pa.binary())), path, filesystem=fs)
    kinds = {f.kind for _, fs_ in audit_store(open_store(s3_location, work_dir=tmp_path / "r"), verifier, registry=capabilities.registry()) for f in fs_}
    assert "modified" in kinds
    with fs.open_output_stream(path) as out:
        out.write(original)
    # a tile overwritten without the conditional header (an attacker with write access)
    blobs = store.blobs
    tile = next(k for k in blobs.list("ledger/bills/p000/tile/0/"))
    hashes = blobs.get(tile)
    blobs.put(tile, hashes[:-1] + bytes([hashes[-1] ^ 1]))
    findings = [f for _, fs_ in audit_store(open_store(s3_location, work_dir=tmp_path / "r2"), verifier, registry=capabilities.registry()) for f in fs_]
    assert findings and findings[0].log.endswith("bills/0")


def test_migrate_copies_a_local_store_and_the_copy_verifies(objectstore, s3_location, keys, tmp_path, seed_rows):  # noqa: F811
    from streams.store.migrate import migrate
    from streams.store.query import Query, Reader

    local = pipeline_for(tmp_path / "local-store", keys, tmp_path, dek_max_records=100)
    load(local, *sealed_bills(local, seed_rows[:300]))
    dest = open_store(s3_location, work_dir=tmp_path / "w")
    report = migrate(local.store, dest, keys[1].ledger_verifier, registry=capabilities.registry())
    assert report.rows["bills"] == 300 and report.deks == 3 and report.logs == len(local.store.log_keys())
    assert migrate(local.store, dest, keys[1].ledger_verifier, registry=capabilities.registry()).rows["bills"] == 0  # again: nothing missing
    reader_local, reader_s3 = Reader(local.store, keys[2]), Reader(dest, keys[2])
    meter = seed_rows[5]["Meter No."]
    assert reader_s3.open_hits(reader_s3.search(Query(meter=meter))) == reader_local.open_hits(reader_local.search(Query(meter=meter)))


def test_a_pinned_snapshot_reads_the_same_rows_while_writers_commit(objectstore, s3_location, keys, tmp_path, seed_rows):  # noqa: F811
    pipeline = pipeline_for(s3_location, keys, tmp_path)
    messages, wrapped = sealed_bills(pipeline, seed_rows[:80])
    load(pipeline, {0: messages[0]}, wrapped)
    store = open_store(s3_location, work_dir=tmp_path / "reader")
    pinned = store.snapshot_id("bills")
    before = store.arrow("bills", snapshot_id=pinned)
    for p in (1, 2, 3):
        pipeline.store_batch("bills.sealed", messages[p])
    assert store.arrow("bills", snapshot_id=pinned).equals(before) and before.num_rows == 20
    assert store.arrow("bills").num_rows == 80 and store.snapshot_id("bills") != pinned



def test_partition_locks_of_two_threads_never_wait_on_each_other_across_workers(objectstore, s3_location, tmp_path):
    """Two workers (two stores), each with one thread holding a partition's lock while its other thread waits
    for the partition the other worker holds: both holders must still be able to unlock. (With one lock
    connection per process this deadlocked — the CI run of 2026-12-01 stalled both surviving workers of the
    scale-out test after a rebalance.)"""
    a = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "a")
    b = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "b")
    everyone_holds = threading.Barrier(4)  # both holders hold, both waiters are about to ask
    done: list[str] = []

    def hold(store, partition, name):
        with store.locked("readings", partition):
            everyone_holds.wait(10)
            time.sleep(0.5)  # meanwhile the other thread of this worker waits on the server
        done.append(name)

    def wait_for(store, partition, name):
        everyone_holds.wait(10)
        with store.locked("readings", partition):
            done.append(name)

    threads = [threading.Thread(target=hold, args=(a, 1, "a held 1"), daemon=True),
               threading.Thread(target=hold, args=(b, 2, "b held 2"), daemon=True),
               threading.Thread(target=wait_for, args=(a, 2, "a got 2"), daemon=True),
               threading.Thread(target=wait_for, args=(b, 1, "b got 1"), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(done) == ["a got 2", "a held 1", "b got 1", "b held 2"], f"deadlocked: only {done}"
    a.close(), b.close()


def _dlq_rows(partition: int, first: int, n: int) -> list[dict]:
    return [{"format": 1, "dlq_id": f"p{partition}-{i:06d}", "source_topic": "readings.raw", "source_partition": partition,
             "source_offset": i, "reason": "test", "rule": "test", "key_id": "k", "envelope": b"x",
             "received_at_ms": 0, "batch_index": None, "topic_partition": partition, "topic_offset": i}
            for i in range(first, first + n)]


def test_a_reader_thread_never_makes_a_concurrent_append_lose_another_writers_rows(objectstore, s3_location, tmp_path):
    """One worker's store thread appends while another of its threads reads (refreshing the table), and a
    second worker appends to the same table: every row of both writers stays in the table. (With one pyiceberg
    ``Table`` shared by the threads, a refresh landing while an append uploaded its file moved the commit's
    requirement to the new head while its manifest list was still built on the old one: the CI run of
    2026-12-01 lost a 569-row group write of a never-killed worker that way.)"""
    a = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "a")
    b = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "b")
    rounds, per = 40, 5
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(store, partition):
        try:
            for r in range(rounds):
                store.write("dlq", partition, _dlq_rows(partition, r * per, per))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader():
        while not stop.is_set():
            a.snapshot_id("dlq")

    threads = [threading.Thread(target=writer, args=(a, 0)), threading.Thread(target=writer, args=(b, 1))]
    refresher = threading.Thread(target=reader, daemon=True)
    refresher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    stop.set()
    refresher.join(10)
    assert not errors, errors
    got = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "c").scan("dlq").column("topic_partition").to_pylist()
    assert (got.count(0), got.count(1)) == (rounds * per, rounds * per)
    a.close(), b.close()


def test_a_partition_lock_whose_connection_died_is_released_without_an_error(objectstore, s3_location, tmp_path):
    """The server dropped the lock connection (restarted, or stopped before a worker's shutdown checkpoint): the
    lock went with the session, so leaving the block must not raise, and the next lock works on a new connection."""
    import psycopg

    a = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "a")
    b = IcebergStore(s3_location, objectstore.catalog, work_dir=tmp_path / "b")
    with a.locked("readings", 5):
        pid = a._locks.connection().info.backend_pid
        with psycopg.connect(objectstore.catalog.replace("+psycopg", ""), autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    got = []

    def take():
        with b.locked("readings", 5):
            got.append("b")

    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(10)
    assert got == ["b"], "the lock of the dead session was not released"
    with a.locked("readings", 6):
        assert a._locks.connection().info.backend_pid != pid
    a.close(), b.close()
