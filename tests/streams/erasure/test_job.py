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
from streams.seal import Sealed
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


def test_the_store_refuses_an_erased_customers_records_read_again_from_the_sealed_topic(rig):
    outcomes = rig.ingest([reading("A", m, account="ACC-A") for m in range(4)] + [reading("B", m) for m in range(4)])
    topic = [(0, 100 + i, o.encode()) for i, o in enumerate(outcomes)]  # what readings.sealed keeps after the erasure
    _erase(rig, kind="meter", subject_id="A")
    rig.pipeline = rig.new_pipeline()  # a restarted worker re-reading the topic, or `store rebuild`
    written, _ = rig.pipeline.store_batch("readings.sealed", topic)
    assert written == 0 and rig.pipeline.erased_dropped == 4  # B's records are known already; A's are refused
    assert _rows(rig, f"meter_tok = '{rig.pipeline.index.meter('A')}'") == []
    _, problems = _audit(rig)
    assert problems == []


def test_an_erased_customers_reading_never_reaches_a_dead_letter_whatever_else_is_wrong(sealed):
    rig = sealed
    stale = rig.new_pipeline()  # a second worker: it read the fence before the erasure and has not read it since
    _erase(rig, kind="meter", subject_id="A")
    rig.pipeline.refresh_erasures()
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    from streams.crypto.envelope import open_with
    from streams.seal import Source, dlq_aad

    wrong_key = rig.pipeline.sealer.reading(reading("A", 7, account="ACC-A"), Source("readings.raw", 0, 900), key=b"B")
    unseen = stale.sealer.readings([reading("A", 8, account="ACC-A")], [Source("readings.raw", 0, 901)])[0]
    for dead in (wrong_key, unseen):
        assert dead.record["rule"] == "erased", dead.record["reason"]
        assert open_with(keyring, dead.record["envelope"], aad=dlq_aad(dead.record["dlq_id"])) == b""


def test_a_job_file_excuses_no_deleted_record_unless_the_ledger_key_signed_its_tombstones(sealed):
    from ledger.redaction import Redaction

    rig = sealed
    store = rig.pipeline.store

    class Killed(BaseException):
        pass

    def stop_after_rows(stage: str, detail: str) -> None:
        if stage == "rows":
            raise Killed

    with pytest.raises(Killed):  # a job cut short after deleting A's rows: its tombstones are in its file
        _erase(rig, kind="meter", subject_id="A", progress=stop_after_rows)
    logs, problems = _audit(rig)
    assert problems == [] and logs["readings"].redacted == 12
    victim = _rows(rig, f"meter_tok = '{rig.pipeline.index.meter('B')}'")[0]
    store.delete_rows("readings", "record_id", [victim["record_id"]])  # someone deletes one of B's records ...
    hashes = store.hash_store("readings", 0).read()
    forged = Redaction.of("readings", 0, [victim["leaf_index"]], hashes, by="forged").to_dict()
    store.blobs.put("erasures/jobs/forged.json", json.dumps({"erasure_id": "forged", "status": "running",
                                                            "tombstones": {"readings/0": forged}}).encode())
    _, problems = _audit(rig)  # ... and adds a job file naming its leaf: still a deleted record
    assert [p for p in problems if "deleted" in p] == [f"{logs['readings'].log}: deleted at leaf {victim['leaf_index']}: "
                                                       "no record for this leaf"]


def test_a_dead_letter_stored_after_the_dlq_stage_goes_in_the_sweep(sealed):
    rig = sealed
    from streams.seal import Source

    bad = json.loads(reading("A", 9, account="ACC-A"))
    bad["kwh"] = "lots"
    dead = rig.pipeline.sealer.reading(json.dumps(bad).encode(), Source("readings.raw", 0, 950))  # before the fence

    def late_dead_letter(stage: str, detail: str) -> None:  # the dlq sink stores it now: it waited on the topic
        if stage == "dlq":
            rig.pipeline.store.append("dlq", 0, [(950, dead.record)])

    report = _erase(rig, kind="meter", subject_id="A", progress=late_dead_letter)
    assert report["records"]["dlq"] == 1
    assert connect(rig.pipeline.store).execute("SELECT count(*) FROM dlq").fetchone()[0] == 0


def test_a_job_cut_short_is_finished_by_erasing_any_subject_it_reaches(sealed):
    rig = sealed

    class Killed(BaseException):
        pass

    def stop_after_fence(stage: str, detail: str) -> None:
        if stage == "fence":
            raise Killed

    with pytest.raises(Killed):
        _erase(rig, kind="meter", subject_id="A", progress=stop_after_fence)
    report = _erase(rig, kind="account", subject_id="ACC-A")  # the operator names the customer's account this time
    assert report["resumed"] and report["records"]["readings"] == 12 and not report.get("already_erased")
    assert _rows(rig, f"account_tok = '{rig.pipeline.index.account('ACC-A')}'") == []


def test_a_worker_forgets_an_erased_meter_in_every_sealer_it_keeps(sealed):
    rig = sealed
    rollups = rig.pipeline.rollups.sealer  # per-meter rollups are sealed by a Sealer of their own (its own caches)
    assert isinstance(rollups.seal_readings([json.loads(reading("A", 30, account="ACC-A", day=14, month="2027-01"))])[0],
                      Sealed)
    old = (rig.pipeline.index.meter("A"), rig.pipeline.index.account("ACC-A"))
    _erase(rig, kind="meter", subject_id="A")
    assert rig.pipeline.refresh_erasures()
    assert rollups.forget(lambda token: token in old) == 0  # nothing of A's old epoch is cached any more


def test_a_meter_erased_many_times_still_opens_and_is_known_at_its_latest_epoch(rig):
    from streams.keys.subjects import Fence

    fence = Fence.load(rig.pipeline.store.blobs)
    for epoch in range(20):  # twenty occupants of meter A came and were erased (as `subject erase` fences them)
        fence.add(rig.pipeline.index.meter("A", epoch), [], erasure_id=f"e{epoch}", at=1.7e9 + epoch)
    rig.pipeline = rig.new_pipeline()
    rig.ingest([reading("A", m, day=14, month="2027-01") for m in range(3)])
    rows = _rows(rig)
    assert {r["meter_tok"] for r in rows} == {rig.pipeline.index.meter("A", 20)}
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    assert [p["meter_id"] for p in open_many(rows, keyring, rig.pipeline.index)] == ["A"] * 3
    report = _erase(rig, kind="meter", subject_id="A")
    assert report["records"]["readings"] == 3
    assert _erase(rig, kind="meter", subject_id="A")["already_erased"]


def test_a_refused_bill_of_an_erased_customer_keeps_nothing_of_it(sealed):
    rig = sealed
    from streams.crypto.envelope import open_with
    from streams.seal import Source, dlq_aad

    _erase(rig, kind="meter", subject_id="A")
    rig.pipeline.refresh_erasures()
    bill = {"Name": "A. Customer", "Address": "1 High St", "Account ID": "ACC-A", "Phone No.": "555-0100",
            "Meter No.": "A", "Date": "2024-01-05", "Time": "10:00:00", "Bill No.": "B-1", "Max Demand": 1.0,
            "Previous Unit": 100, "Present Unit": 150, "Billed Unit": 49,  # (wrong: refused by the validator)
            "Due Date": "2024-01-20", "Total Due": 10.0, "Sanctioned Load": 5.0, "Fixed Amount": 1.0,
            "Category": "Domestic", "region": "north"}
    dead = rig.pipeline.seal_bill(json.dumps(bill).encode(), Source("bills.raw", 0, 1))
    assert dead.record["rule"] == "erased"
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    assert open_with(keyring, dead.record["envelope"], aad=dlq_aad(dead.record["dlq_id"])) == b""
    bill["Billed Unit"] = 50
    assert rig.pipeline.seal_bill(json.dumps(bill).encode(), Source("bills.raw", 0, 2)).record["rule"] == "erased"
