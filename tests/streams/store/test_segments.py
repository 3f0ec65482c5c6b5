import json

import pytest

from streams.exceptions import StoreError
from streams.keys.keyring import Keyring
from streams.keys.owner import OwnerKeyPair
from streams.seal import Source
from streams.unseal import open_record
from streams.store.segments import SegmentStore, arrow_schema, connect

from tests.streams.test_validate import GOOD


def sealed_rows(sealer, n, start=0):
    return [(start + i, sealer.reading(json.dumps({**GOOD, "register_kwh": i, "ts": f"2024-03-01T10:{i:02d}:00Z"}).encode(),
                                       Source("readings.raw", 0, i)).record) for i in range(n)]


def test_views_exist_on_an_empty_store(tmp_path):
    con = connect(tmp_path / "store")
    assert con.execute("SELECT count(*) FROM readings").fetchone() == (0,)
    assert [c[0] for c in con.execute("SELECT * FROM dlq").description][:2] == ["format", "dlq_id"]


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no data directory"):
        connect(tmp_path / "nope" / "store")


def test_append_is_idempotent_by_record_id(tmp_path, sealer):
    store = SegmentStore(tmp_path)
    rows = sealed_rows(sealer, 20)
    assert store.append("readings", 0, rows) == 20
    assert store.append("readings", 0, rows) == 0  # redelivery
    # the same records at new offsets (e.g. after the in-memory broker restarted) are still duplicates
    assert store.append("readings", 0, [(o + 1000, r) for o, r in rows]) == 0
    # a second process sees what the first wrote
    assert SegmentStore(tmp_path).append("readings", 0, rows[:5]) == 0
    con = connect(tmp_path)
    assert con.execute("SELECT count(*), count(DISTINCT record_id) FROM readings").fetchone() == (20, 20)


def test_writer_notices_segments_written_by_another_process(tmp_path, sealer):
    a, b = SegmentStore(tmp_path), SegmentStore(tmp_path)
    rows = sealed_rows(sealer, 10)
    assert a.append("readings", 1, rows[:5]) == 5
    assert b.append("readings", 1, rows) == 5
    assert a.append("readings", 1, rows) == 0


def test_segments_are_whole_files_with_the_declared_schema(tmp_path, sealer):
    import pyarrow.parquet as pq

    store = SegmentStore(tmp_path)
    store.append("readings", 3, sealed_rows(sealer, 3))
    (seg,) = store.segments("readings", 3)
    # names and types as declared (DuckDB's writer marks every column optional; required fields are
    # enforced when the Arrow table is built from the rows)
    assert [(f.name, f.type) for f in pq.read_schema(seg)] == [(f.name, f.type) for f in arrow_schema("readings")]
    assert not list(seg.parent.glob("*.tmp"))


def test_a_stored_record_opens_through_the_keyring(tmp_path, index, policy):
    from streams.crypto.envelope import DekRing
    from streams.seal import Sealer

    owner = OwnerKeyPair.generate()
    store = SegmentStore(tmp_path)

    def keep(dek):
        store.put_dek({"key_id": dek.key_hex, "scheme": owner.scheme, "owner_fingerprint": owner.public_key.fingerprint,
                       "wrapped": owner.public_key.wrap(dek), "created_at_ms": 0, "worker": "test"})

    sealer = Sealer(index, DekRing(2, 3600, keep), policy)
    store.append("readings", 0, sealed_rows(sealer, 5))
    assert len(store.dek_ids()) == 3
    con = connect(tmp_path)
    cols = [d[0] for d in con.execute("SELECT * FROM readings").description]
    ring = Keyring(store, {owner.public_key.fingerprint: owner.unwrapper()})
    opened = [open_record(dict(zip(cols, row)), ring, index) for row in con.execute("SELECT * FROM readings").fetchall()]
    assert sorted(p["register_kwh"] for p in opened) == [0, 1, 2, 3, 4]
    # without the right owner key nothing opens
    from streams.exceptions import InvalidEnvelope

    other = OwnerKeyPair.generate()
    with pytest.raises(InvalidEnvelope):
        open_record(dict(zip(cols, con.execute("SELECT * FROM readings").fetchone())),
                    Keyring(store, {other.public_key.fingerprint: other.unwrapper()}), index)


def test_put_dek_is_idempotent_and_get_validates_ids(tmp_path):
    store = SegmentStore(tmp_path)
    wrapped = {"key_id": "ab" * 16, "scheme": "x", "owner_fingerprint": "f", "wrapped": b"\x01\x02", "created_at_ms": 1, "worker": "w"}
    assert store.put_dek(wrapped) and not store.put_dek(wrapped)
    assert store.get_dek("ab" * 16)["wrapped"] == b"\x01\x02"
    assert store.get_dek("../../etc/passwd") is None
