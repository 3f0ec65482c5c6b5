"""Retention: rows older than their kind's period go (by their own time), newer rows stay, DEKs nothing uses any more
are destroyed, and the ledger still verifies."""

from __future__ import annotations

import datetime as dt

import pytest

from streams import capabilities
from streams.erasure.retention import Duration, enforce, load_policy, parse_duration, set_policy
from streams.exceptions import ErasureError
from streams.keys.keyring import Keyring
from streams.store.audit import audit_store
from streams.store.base import connect
from streams.unseal import open_many
from tests.streams.erasure.conftest import Rig, reading

JAN_2024 = dt.datetime(2024, 1, 20, tzinfo=dt.timezone.utc).timestamp()


def _rows(rig: Rig, table: str = "readings") -> list[dict]:
    con = connect(rig.pipeline.store)
    cur = con.execute(f"SELECT * FROM {table}")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def test_iso_durations_and_calendar_cutoffs():
    assert parse_duration("P2Y") == Duration(years=2) and parse_duration("p400d") == Duration(days=400)
    assert parse_duration("P1Y6M2W3DT4H5M6S") == Duration(1, 6, 17, 4 * 3600 + 5 * 60 + 6)
    for bad in ("", "P", "2Y", "P1.5Y", "PT", "P0D", "forever", "P1Y" + "1" * 40 + "X"):
        with pytest.raises(ErasureError):
            parse_duration(bad)
    now = dt.datetime(2024, 3, 31, 12, tzinfo=dt.timezone.utc).timestamp()
    assert dt.datetime.fromtimestamp(parse_duration("P1M").before(now), dt.timezone.utc).date() == dt.date(2024, 2, 29)
    assert dt.datetime.fromtimestamp(parse_duration("P1Y").before(now), dt.timezone.utc).date() == dt.date(2023, 3, 31)


def test_policy_defaults_keep_bills_longer_and_set_persists_in_the_store(rig):
    policy = load_policy(rig.pipeline.store)
    assert parse_duration(policy["bills"]["keep"]).years > parse_duration(policy["readings"]["keep"]).years
    assert not policy["readings"]["set"]
    kinds = [k.kind for k in capabilities.registry().retained_kinds]
    set_policy(rig.pipeline.store, "readings", "P400D", known=kinds)
    assert load_policy(rig.pipeline.store)["readings"] == {"keep": "P400D", "set": True}
    with pytest.raises(ErasureError, match="unknown kind"):
        set_policy(rig.pipeline.store, "nonsense", "P1Y", known=kinds)


def test_enforcing_deletes_older_rows_destroys_their_deks_and_keeps_the_ledger_checkable(tmp_path):
    rig = Rig(tmp_path / "data", dek_max_records=8)
    rig.now = JAN_2024 + 86400  # sealed in January 2024 with the DEKs of then
    rig.ingest([reading("A", m, account="ACC-A", day=20) for m in range(8)] + [reading("B", m, day=20) for m in range(8)])
    old_keys = {r["key_id"] for r in _rows(rig)}
    rig.now = 1.8e9  # 2027-01-15: a new pipeline's DEKs
    rig.pipeline = rig.new_pipeline()
    rig.ingest([reading("A", m, account="ACC-A", day=10, month="2027-01") for m in range(8)])
    new_keys = {r["key_id"] for r in _rows(rig)} - old_keys
    assert old_keys and new_keys and len(_rows(rig)) == 24
    kinds = [k.kind for k in capabilities.registry().retained_kinds]
    set_policy(rig.pipeline.store, "readings", "P1Y", known=kinds)
    report = enforce(rig.pipeline.store, index_key=rig.keys.index_key, signers=[rig.signer],
                     registry=capabilities.registry(), now=1.8e9, dek_max_age_s=3600)
    assert report["deleted"]["readings"] == 16 and report["deleted"]["deks_destroyed"] == len(old_keys)
    left = _rows(rig)
    assert len(left) == 8 and {r["key_id"] for r in left} == new_keys
    assert set(rig.pipeline.store.dek_ids()) == new_keys  # the old DEKs are gone with their rows
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    assert {p["ts"][:7] for p in open_many(left, keyring)} == {"2027-01"}
    results = audit_store(rig.pipeline.store, rig.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []
    summary = {s.log.split("/")[-2]: s for s, _ in results}
    assert summary["readings"].redacted == 16 and summary["deks"].redacted == len(old_keys)
    again = enforce(rig.pipeline.store, index_key=rig.keys.index_key, signers=[rig.signer],
                    registry=capabilities.registry(), now=1.8e9)
    assert again["deleted"]["readings"] == 0 and summary["erasure"].leaves == 1


def test_a_destroyed_dek_read_again_from_keys_deks_is_not_stored_again(tmp_path):
    import schemas
    from streams.exceptions import InvalidEnvelope
    from streams.seal import Source

    rig = Rig(tmp_path / "data")
    rig.now = JAN_2024 + 86400
    states = {}
    for m in range(4):
        rig.pipeline.seal_reading(reading("A", m, day=20), Source("readings.raw", 0, m), states)
    wrapped = [w for _, w in rig.pipeline.take_new_keys()]  # what keys.deks keeps (a compacted topic: for good)
    rig.ingest([reading("A", m, day=20) for m in range(4)])
    backup = _rows(rig)  # copies of the rows elsewhere (a sealed topic, a backup)
    set_policy(rig.pipeline.store, "readings", "P1Y", known=[k.kind for k in capabilities.registry().retained_kinds])
    report = enforce(rig.pipeline.store, index_key=rig.keys.index_key, signers=[rig.signer],
                     registry=capabilities.registry(), now=1.8e9)
    assert report["deleted"]["deks_destroyed"] == len(wrapped) == 1 and report["destroyed_deks"] == [wrapped[0]["key_id"]]
    rig.pipeline = rig.new_pipeline()  # a restarted worker reads keys.deks from its start
    assert not rig.pipeline.store_key(schemas.encode("wrapped_key", wrapped[0]), 0)
    assert not rig.pipeline.store_key(None, 0) and rig.pipeline.unreadable_keys == 0  # its tombstone on the topic
    assert rig.pipeline.store.dek_ids() == []
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    with pytest.raises(InvalidEnvelope):
        open_many(backup[:1], keyring)
    results = audit_store(rig.pipeline.store, rig.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []


@pytest.mark.parametrize("backend", ["local", pytest.param("s3", marks=pytest.mark.objectstore)])
def test_a_late_old_reading_stored_during_a_run_is_not_deleted_without_its_tombstone(tmp_path, backend, request):
    location = None if backend == "local" else request.getfixturevalue("s3_location")
    rig = Rig(tmp_path / "data", location=location)
    rig.ingest([reading("A", m, day=3) for m in range(4)] + [reading("A", m, day=10, month="2027-01") for m in range(4)])
    set_policy(rig.pipeline.store, "readings", "P2Y", known=[k.kind for k in capabilities.registry().retained_kinds])
    store = rig.pipeline.store
    delete_rows = store.delete_rows

    def worker_stores_meanwhile(*args, **kw):  # a head-end's backfill of 2024 lands between the match and the delete
        if len(_rows(rig)) == 8:
            rig.ingest([reading("C", 1, day=4)])
        return delete_rows(*args, **kw)

    store.delete_rows = worker_stores_meanwhile
    report = enforce(store, index_key=rig.keys.index_key, signers=[rig.signer], registry=capabilities.registry(),
                     now=1.8e9)
    assert report["deleted"]["readings"] == 4 and len(_rows(rig)) == 5  # the late one waits for the next run
    results = audit_store(store, rig.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []
    store.delete_rows = delete_rows
    assert enforce(store, index_key=rig.keys.index_key, signers=[rig.signer], registry=capabilities.registry(),
                   now=1.8e9)["deleted"]["readings"] == 1


def test_a_run_over_a_store_with_an_alert_history_destroys_only_unused_deks(rig):
    rig.ingest([reading("A", m, day=10, month="2027-01") for m in range(8)])
    alert = {"format": 1, "alert_id": "a1", "meter_tok": rig.pipeline.index.meter("A"), "ts": "2027-01-15T07:00:00Z",
             "kind": "spike", "score": 0.9, "severity": "warning", "reason": "spike", "region": "north", "kwh": 1.0,
             "ingested_at_ms": int(1.8e12), "detected_at_ms": int(1.8e12)}
    rig.pipeline.store.append("alerts", 0, [(0, alert)])  # a table without DEKs (clear, by token)
    report = enforce(rig.pipeline.store, index_key=rig.keys.index_key, signers=[rig.signer],
                     registry=capabilities.registry(), now=1.8e9 + 3 * 86400)
    assert report["deleted"]["deks_destroyed"] == 0 and len(rig.pipeline.store.dek_ids()) == 1
