from streams import capabilities
import json

import schemas
from streams.keys.owner import OwnerKeyPair
from streams.pipeline import Pipeline
from streams.seal import Rejected, Sealed, Source
from streams.settings import Settings
from streams.store.segments import SegmentStore, connect

from .test_validate import GOOD, SEED_ROW

OWNER = OwnerKeyPair.generate()


def make(tmp_path, **settings):
    s = Settings.from_env({}, data_dir=tmp_path, **settings)
    return Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), clock=lambda: 1.8e9)


def test_new_keys_are_stored_before_use_and_queued_once(tmp_path):
    p = make(tmp_path, dek_max_records=2)
    for i in range(5):
        p.seal_bill(json.dumps({**SEED_ROW, "Bill No.": str(i)}).encode(), Source("bills.raw", 0, i))
    msgs = p.take_new_keys()
    assert len(msgs) == 3 and p.take_new_keys() == []
    assert sorted(k.decode() for k, _ in msgs) == p.store.dek_ids()
    assert msgs[0][1]["owner_fingerprint"] == OWNER.public_key.fingerprint
    assert schemas.decode("wrapped_key", schemas.encode("wrapped_key", msgs[0][1])) == msgs[0][1]


def test_meter_state_table_holds_only_sealed_values(tmp_path):
    p = make(tmp_path)
    table = {}
    out = p.seal_reading(json.dumps(GOOD).encode(), Source("readings.raw", 0, 0), table)
    assert isinstance(out, Sealed) and list(table) == [out.key]
    assert b"12.5" not in table[out.key] and b"m1" not in out.key
    rollback = p.seal_reading(json.dumps({**GOOD, "ts": "2024-03-01T10:15:00Z", "register_kwh": 1.0}).encode(),
                              Source("readings.raw", 0, 1), table)
    assert isinstance(rollback, Rejected) and rollback.record["rule"] == "register"


def test_store_batch_writes_once_and_dead_letters_garbage(tmp_path):
    p = make(tmp_path)
    sealed = [p.seal_bill(json.dumps({**SEED_ROW, "Bill No.": str(i)}).encode(), Source("bills.raw", 0, i)) for i in range(3)]
    msgs = [(0, i, s.encode()) for i, s in enumerate(sealed)] + [(0, 3, b"not a sealed record")]
    written, rejected = p.store_batch("bills.sealed", msgs)
    assert written == 3 and len(rejected) == 1 and rejected[0].record["rule"] == "sink"
    assert p.store_batch("bills.sealed", msgs[:3]) == (0, [])
    dead = [(0, 0, rejected[0].encode()), (0, 1, b"garbage on dlq")]
    assert p.store_batch("dlq", dead) == (1, []) and p.unreadable_dead_letters == 1
    con = connect(tmp_path / "store")
    assert con.execute("SELECT count(*) FROM bills").fetchone() == (3,)


def test_store_batch_reads_sealed_batches_and_a_redelivered_batch_adds_nothing(tmp_path):
    from streams.sealed_batch import batch_messages

    p = make(tmp_path)
    sealed = [p.seal_bill(json.dumps({**SEED_ROW, "Bill No.": str(i)}).encode(), Source("bills.raw", 1, i)) for i in range(7)]
    first, second = batch_messages([s.record for s in sealed[:4]]), batch_messages([s.record for s in sealed[3:]])
    assert p.store_batch("bills.sealed", [(1, 0, first[0])]) == (4, [])
    assert p.store_batch("bills.sealed", [(1, 0, first[0]), (1, 1, second[0])]) == (3, [])  # redelivered + overlap
    con = connect(tmp_path / "store")
    rows = con.execute("SELECT topic_partition, topic_offset, leaf_index FROM bills ORDER BY leaf_index").fetchall()
    assert rows == [(1, 0, 0), (1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 1, 4), (1, 1, 5), (1, 1, 6)]


def test_key_events_are_leaves_once_each_and_audit_clean(tmp_path):
    from ledger import leaf
    from ledger.audit import audit
    from ledger.note import Signer

    signer = Signer.generate("meterseal-ledger")
    s = Settings.from_env({}, data_dir=tmp_path, dek_max_records=1)
    p = Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), signer, clock=lambda: 1.8e9)
    for i in range(3):
        p.seal_bill(json.dumps({**SEED_ROW, "Bill No.": str(i)}).encode(), Source("bills.raw", 0, i))
    msgs = p.take_new_keys()
    encoded = [schemas.encode("wrapped_key", r) for _, r in msgs]
    assert [p.store_key(v, 1) for v in encoded] == [True, True, True]
    assert [p.store_key(v, 1) for v in encoded] == [False, False, False]  # redelivery: no second leaf
    assert p.key_log(1).size == 3
    p.checkpoint_due(force=True)
    store = p.store
    from ledger.log import FileCheckpoints
    from ledger.storage import FileHashStore

    summary, findings = audit(p.origin("deks", 1), FileHashStore(store.hash_path("deks", 1)).read(), store.dek_rows(1),
                              FileCheckpoints(store.checkpoint_dir("deks", 1)).all(), signer.verifier,
                              encode=leaf.encode_key_event)
    assert findings == [] and summary.signed_size == 3
    assert p.store_key(b"garbage", 1) is False and p.unreadable_keys == 1


def test_a_key_marked_by_a_killed_worker_gets_its_leaf_when_redelivered(tmp_path):
    """A worker killed between marking a DEK (its leaf index) and appending the leaf: the worker that gets the
    redelivery finds the DEK marked and must still append the missing leaf, or `ledger verify` reports it."""
    from ledger import leaf
    from ledger.audit import audit
    from ledger.log import FileCheckpoints
    from ledger.note import Signer
    from ledger.storage import FileHashStore

    signer = Signer.generate("meterseal-ledger")
    s = Settings.from_env({}, data_dir=tmp_path, dek_max_records=1)
    killed = Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), signer, clock=lambda: 1.8e9)
    for i in range(2):
        killed.seal_bill(json.dumps({**SEED_ROW, "Bill No.": str(i)}).encode(), Source("bills.raw", 0, i))
    (_, first), (_, second) = killed.take_new_keys()
    assert killed.store_key(schemas.encode("wrapped_key", first), 1) is True
    killed.store.put_dek(second)  # the kill: marked as leaf 1, the leaf never appended
    killed.store.mark_dek(second["key_id"], partition=1, leaf_index=1)
    taker = Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), signer, clock=lambda: 1.8e9)
    assert taker.store_key(schemas.encode("wrapped_key", second), 1) is False  # marked already: no second leaf
    store = taker.store
    assert len(FileHashStore(store.hash_path("deks", 1)).read()) == 2  # but its leaf appended now
    taker.checkpoint_due(force=True)
    summary, findings = audit(taker.origin("deks", 1), FileHashStore(store.hash_path("deks", 1)).read(),
                              store.dek_rows(1), FileCheckpoints(store.checkpoint_dir("deks", 1)).all(),
                              signer.verifier, encode=leaf.encode_key_event)
    assert findings == [] and summary.signed_size == 2


def test_two_writers_on_one_partition_keep_one_consistent_log(tmp_path):
    """A worker that lost a partition and its new owner both append: the lock and re-reads keep one log."""
    from ledger import leaf
    from ledger.hashing import leaf_hash
    from ledger.note import Signer
    from ledger.storage import FileHashStore

    signer = Signer.generate("meterseal-ledger")
    s = Settings.from_env({}, data_dir=tmp_path)
    a = Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), signer)
    b = Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), signer)
    bills = [a.seal_bill(json.dumps({**SEED_ROW, "Bill No.": str(i)}).encode(), Source("bills.raw", 0, i)) for i in range(30)]
    msgs = [(0, i, x.encode()) for i, x in enumerate(bills)]
    assert a.store_batch("bills.sealed", msgs[:10])[0] == 10
    assert b.store_batch("bills.sealed", msgs[5:20])[0] == 10   # b re-reads a's rows: 5 duplicates skipped
    assert a.store_batch("bills.sealed", msgs[15:30])[0] == 10  # a re-reads b's rows and log
    a.checkpoint_due(force=True)
    rows = a.store.rows("bills", 0)
    assert [r["leaf_index"] for r in rows] == list(range(30))
    assert FileHashStore(a.store.hash_path("bills", 0)).read() == [leaf_hash(leaf.encode(r)) for r in rows]


def test_catch_up_logs_rows_a_killed_writer_stored_but_did_not_log(tmp_path):
    """Killed between writing rows and appending their hashes: the next owner of the partition catches the log up
    when it takes the partition, before any new record arrives."""
    from ledger.note import Signer
    from streams.store.audit import audit_store

    signer = Signer.generate("meterseal-ledger")
    s = Settings.from_env({}, data_dir=tmp_path)
    killed = Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), signer)
    bills = [killed.seal_bill(json.dumps({**SEED_ROW, "Bill No.": str(i)}).encode(), Source("bills.raw", 0, i)) for i in range(9)]
    assert killed.store_batch("bills.sealed", [(0, i, b.encode()) for i, b in enumerate(bills[:5])])[0] == 5
    rows = killed.store.fresh("bills", 0, [(5 + i, b.record) for i, b in enumerate(bills[5:])])
    killed.store.number("bills", 0, rows, 5)
    killed.store.write("bills", 0, rows)  # ... and killed before ``log.append``
    assert [f.kind for _, fs in audit_store(SegmentStore(tmp_path / "store"), signer.verifier, registry=capabilities.registry()) for f in fs] == ["inserted"] * 4
    owner = Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), signer)
    assert owner.catch_up("bills", 0) == 4 and owner.catch_up("bills", 0) == 0
    owner.checkpoint_due(force=True)
    assert all(not fs for _, fs in audit_store(SegmentStore(tmp_path / "store"), signer.verifier, registry=capabilities.registry()))
