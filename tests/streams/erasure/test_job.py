"""Erasure by crypto-shredding on a local store: what is destroyed, what survives as hashes, what copies taken before
can still open (nothing of the erased customer's), and the ledger afterwards."""

from __future__ import annotations

import json
import shutil

import pytest

from streams import capabilities
from streams.erasure.job import Owner, erase
from streams.exceptions import ErasureError, InvalidEnvelope, SubjectErased
from streams.keys.keyring import Keyring
from streams.keys.subjects import KEYS, SubjectKeyTable
from streams.store.audit import audit_store
from streams.store.base import connect
from streams.unseal import open_many

from tests.streams.erasure.conftest import Rig, reading


def _erase(rig: Rig, **kw):
    return erase(rig.pipeline.store, owner=Owner(rig.keys.index_key, rig.keys.unwrappers()), signers=[rig.signer],
                 registry=capabilities.registry(), grace_s=0, data_dir=rig.data, **kw)


def _rows(rig: Rig, where: str = "TRUE") -> list[dict]:
    con = connect(rig.pipeline.store)
    try:
        cur = con.execute(f"SELECT * FROM readings WHERE {where}")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def _audit(rig: Rig):
    results = audit_store(rig.pipeline.store, rig.keystore.ledger_verifiers, registry=capabilities.registry())
    return {s.log.split("/")[-2]: s for s, _ in results}, [str(f) for _, fs in results for f in fs]


@pytest.fixture
def sealed(rig):
    """Meter A (account ACC-A) and meter B (account ACC-B) under the same DEK; meter C without an account."""
    rig.ingest([reading("A", m, account="ACC-A") for m in range(12)] + [reading("B", m, account="ACC-B") for m in range(12)]
               + [reading("C", m) for m in range(6)])
    assert len({r["key_id"] for r in _rows(rig)}) == 1  # one DEK sealed all three customers
    return rig


def test_copies_taken_before_erasure_no_longer_open_while_other_customers_rows_under_the_same_dek_do(sealed, tmp_path):
    rig = sealed
    index = rig.pipeline.index
    a_tok = index.account("ACC-A")
    backup = _rows(rig, f"account_tok = '{a_tok}'")  # a backup, a sealed topic, a share recipient: ciphertext kept
    others = _rows(rig, f"account_tok IS DISTINCT FROM '{a_tok}'")
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    assert len(open_many(backup, keyring)) == 12
    report = _erase(rig, kind="meter", subject_id="A", reason="gdpr-art17")
    assert report["erased"] and report["records"]["readings"] == 12 and report["reach"] == {"meters": 1, "accounts": 1}
    # everything the owner still holds: keystore, DEKs, the subject-key table (a fresh keyring reads it again)
    fresh = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    for row in backup:
        with pytest.raises(InvalidEnvelope):
            open_many([row], fresh)
    assert {p["meter_id"] for p in open_many(others, fresh)} == {"B", "C"}
    assert _rows(rig, f"account_tok = '{a_tok}'") == []


def test_no_store_file_holds_the_erased_tokens_afterwards(sealed):
    rig = sealed
    index = rig.pipeline.index
    tokens = [index.meter("A").encode(), index.account("ACC-A").encode()]
    root = rig.pipeline.store.root
    before = [p for p in root.rglob("*") if p.is_file() and any(t in p.read_bytes() for t in tokens)]
    assert before  # segments, subject-key table and log marks held them
    _erase(rig, kind="account", subject_id="ACC-A")
    after = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and any(t in p.read_bytes() for t in tokens)]
    assert after == []
    assert connect(rig.pipeline.store).execute(
        "SELECT count(*) FROM readings WHERE meter_tok = ?", [index.meter("A")]).fetchone()[0] == 0


def test_ledger_verifies_after_erasure_and_a_tampered_tombstone_is_found(sealed):
    rig = sealed
    _erase(rig, kind="meter", subject_id="A")
    logs, problems = _audit(rig)
    assert problems == [] and logs["readings"].redacted == 12 and logs["subjects"].redacted == 1
    assert logs["erasure"].leaves == 1
    event = next(p for p in (rig.pipeline.store.root / "erasures" / "events").iterdir())
    original = event.read_text()
    doc = json.loads(original)
    readings = next(t for t in doc["tombstones"] if t["table"] == "readings")
    readings["ranges"][0][1] += 1  # claim one more leaf than was erased (B's first reading)
    event.write_text(json.dumps(doc))
    _, problems = _audit(rig)  # the event's tombstones no longer hash to what its leaf carries: none counts
    assert any("readings/0: deleted" in p for p in problems), problems
    from streams.erasure.log import tombstones_sha256

    doc["tombstones_sha256"] = tombstones_sha256(doc["tombstones"])  # ... and the leaf's hash of them too
    event.write_text(json.dumps(doc))
    _, problems = _audit(rig)
    assert any("erasure/0: modified" in p for p in problems) and any("readings/0: tombstone" in p for p in problems)
    event.write_text(original)
    assert _audit(rig)[1] == []


def test_other_records_inclusion_proofs_are_unchanged(sealed):
    from streams.store.audit import find_record, proof_bundle

    rig = sealed
    b_ids = [r["record_id"] for r in _rows(rig, f"meter_tok = '{rig.pipeline.index.meter('B')}'")]
    vkey = "unused"
    before = {rid: proof_bundle(rig.pipeline.store, *find_record(rig.pipeline.store, rid), vkey=vkey) for rid in b_ids}
    _erase(rig, kind="meter", subject_id="A")
    after = {rid: proof_bundle(rig.pipeline.store, *find_record(rig.pipeline.store, rid), vkey=vkey) for rid in b_ids}
    assert after == before


def test_a_restored_copy_of_the_subject_key_table_is_refused(sealed, tmp_path):
    rig = sealed
    keys_dir = rig.pipeline.store.root / KEYS
    saved = tmp_path / "keys-backup"
    shutil.copytree(keys_dir, saved)
    token = rig.pipeline.index.account("ACC-A")
    _erase(rig, kind="meter", subject_id="A")
    assert not (keys_dir / f"{token}.json").exists()
    shutil.copytree(saved, keys_dir, dirs_exist_ok=True)  # the restore
    table = SubjectKeyTable(rig.pipeline.store, rig.keys.index_key)
    with pytest.raises(SubjectErased):
        table.load(token)
    with pytest.raises(SubjectErased):
        table.create(token, "account")
    row = _backup_row = None  # nothing opens through the keyring either
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    with pytest.raises(KeyError):
        keyring.subject_key(token, bytes(16))


def test_a_later_reading_gets_a_new_epoch_and_an_older_one_is_refused(sealed):
    rig = sealed
    old_token = rig.pipeline.index.meter("A")
    _erase(rig, kind="meter", subject_id="A")
    assert rig.pipeline.refresh_erasures()  # a worker sees the fence
    # the pipeline's clock is 2027-01-15: a reading after the erasure (a new occupant), and one of the old occupant's
    new, replayed = rig.ingest([reading("A", 5, account="ACC-A", day=15, month="2027-01"),
                                reading("A", 3, account="ACC-A", day=1)])
    assert new.record["meter_tok"] not in (old_token,) and new.record["meter_tok"] == rig.pipeline.index.meter("A", 1)
    assert new.record["account_tok"] == rig.pipeline.index.account("ACC-A", 1)
    assert replayed.record["rule"] == "erased" and replayed.record["envelope"]  # a dead letter holding nothing
    bad = json.loads(reading("A", 4, account="ACC-A", day=2))
    bad["kwh"] = -1  # also invalid: still refused as erased, so its dead letter does not keep it
    assert rig.ingest([json.dumps(bad).encode()])[0].record["rule"] == "erased"
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    from streams.crypto.envelope import open_with
    from streams.seal import dlq_aad

    assert open_with(keyring, replayed.record["envelope"], aad=dlq_aad(replayed.record["dlq_id"])) == b""
    assert [p["meter_id"] for p in open_many(_rows(rig, f"meter_tok = '{new.record['meter_tok']}'"), keyring)] == ["A"]
    _, problems = _audit(rig)
    assert problems == []


def test_erasing_twice_says_so_and_an_unknown_subject_changes_nothing(sealed):
    rig = sealed
    first = _erase(rig, kind="meter", subject_id="A")
    again = _erase(rig, kind="meter", subject_id="A")
    assert again["already_erased"] and again["erasure_id"] == first["erasure_id"]
    files = sorted(p for p in rig.pipeline.store.root.rglob("*") if p.is_file())
    with pytest.raises(ErasureError, match="unknown meter Z"):
        _erase(rig, kind="meter", subject_id="Z")
    assert sorted(p for p in rig.pipeline.store.root.rglob("*") if p.is_file()) == files
    with pytest.raises(ErasureError, match="reason"):
        _erase(rig, kind="meter", subject_id="B", reason="Mrs Smith asked on 3 May; her phone is 555-0100!")


def test_erasing_a_meter_reaches_the_customer_its_records_name(rig):
    rig.ingest([reading("M1", m, account="SHARED") for m in range(4)] + [reading("M2", m, account="SHARED") for m in range(4)]
               + [reading("M3", m) for m in range(4)])
    report = _erase(rig, kind="meter", subject_id="M1")
    assert report["reach"] == {"meters": 2, "accounts": 1} and report["records"]["readings"] == 8
    assert len(_rows(rig)) == 4
