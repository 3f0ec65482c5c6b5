"""Erasure and retention on both store backends (the contract): local segments and Iceberg tables + tile logs on
S3 — afterwards no file or object holds the erased customer's tokens, the ledger verifies, the rest opens."""

from __future__ import annotations

import pytest

from streams import capabilities
from streams.erasure.job import Owner, erase
from streams.erasure.retention import enforce, set_policy
from streams.keys.keyring import Keyring
from streams.store.audit import audit_store
from streams.store.base import connect, is_remote
from streams.unseal import open_many
from streams.seal import Source
from tests.streams.erasure.conftest import Rig, reading

BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.objectstore)]


@pytest.fixture(params=BACKENDS)
def backend_rig(request, tmp_path):
    location = tmp_path / "data" / "store" if request.param == "local" else request.getfixturevalue("s3_location")
    return Rig(tmp_path / "data", location=location)


def _every_byte(rig: Rig) -> list[tuple[str, bytes]]:
    """Every file of a local store, or every object under an S3 store's bucket (tables, tiles, keys)."""
    if not is_remote(rig.location):
        return [(str(p), p.read_bytes()) for p in rig.data.rglob("*") if p.is_file() and "work-" not in str(p)]
    from streams.store.objects import parse_s3, s3_client

    client = s3_client()
    bucket, _ = parse_s3(rig.location)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return [(k, client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]


def test_erasure_leaves_no_token_anywhere_and_the_ledger_verifies(backend_rig):
    rig = backend_rig
    rig.ingest([reading("A", m, account="ACC-A") for m in range(10)] + [reading("B", m, account="ACC-B") for m in range(10)])
    tokens = [rig.pipeline.index.meter("A").encode(), rig.pipeline.index.account("ACC-A").encode()]
    assert any(t in data for _, data in _every_byte(rig) for t in tokens)
    report = erase(rig.pipeline.store, owner=Owner(rig.keys.index_key, rig.keys.unwrappers()), signers=[rig.signer],
                   registry=capabilities.registry(), kind="account", subject_id="ACC-A", grace_s=0, data_dir=rig.data)
    assert report["records"]["readings"] == 10
    holding = [name for name, data in _every_byte(rig) if any(t in data for t in tokens)]
    assert holding == []
    con = connect(rig.pipeline.store)
    cur = con.execute("SELECT * FROM readings")
    rows = [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
    keyring = Keyring(rig.pipeline.store, rig.keys.unwrappers(), index_key=rig.keys.index_key)
    assert {p["meter_id"] for p in open_many(rows, keyring)} == {"B"}
    results = audit_store(rig.pipeline.store, rig.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []


def test_retention_on_either_backend(backend_rig):
    rig = backend_rig
    rig.ingest([reading("A", m, day=3) for m in range(6)] + [reading("A", m, day=10, month="2027-01") for m in range(6)])
    set_policy(rig.pipeline.store, "readings", "P2Y", known=[k.kind for k in capabilities.registry().retained_kinds])
    report = enforce(rig.pipeline.store, index_key=rig.keys.index_key, signers=[rig.signer],
                     registry=capabilities.registry(), now=1.8e9)
    assert report["deleted"]["readings"] == 6
    assert connect(rig.pipeline.store).execute("SELECT count(*) FROM readings").fetchone()[0] == 6
    results = audit_store(rig.pipeline.store, rig.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []


def test_rows_a_late_worker_stored_after_the_cleanup_leave_no_bytes_behind(backend_rig):
    rig = backend_rig
    rig.ingest([reading("A", m, account="ACC-A") for m in range(6)] + [reading("B", m, account="ACC-B") for m in range(6)])
    late = rig.new_pipeline()  # a worker sealing A's readings that will not read the fence before the cleanup
    assert late.sealer.reading(reading("A", 39, account="ACC-A"), Source("readings.raw", 0, 98)).record["record_id"]
    tokens = [rig.pipeline.index.meter("A").encode(), rig.pipeline.index.account("ACC-A").encode()]

    def stalled_worker_stores(stage: str, detail: str) -> None:
        if stage == "cleanup":
            sealed = late.sealer.reading(reading("A", 40, account="ACC-A"), Source("readings.raw", 0, 99))
            late.store_sealed("readings", 0, [(99, sealed.record)])

    report = erase(rig.pipeline.store, owner=Owner(rig.keys.index_key, rig.keys.unwrappers()), signers=[rig.signer],
                   registry=capabilities.registry(), kind="account", subject_id="ACC-A", grace_s=0, data_dir=rig.data,
                   progress=stalled_worker_stores)
    assert report["records"]["readings"] == 7
    assert [name for name, data in _every_byte(rig) if any(t in data for t in tokens)] == []
    results = audit_store(rig.pipeline.store, rig.keystore.ledger_verifiers, registry=capabilities.registry())
    assert [str(f) for _, fs in results for f in fs] == []


@pytest.mark.objectstore
def test_the_workers_snapshot_expiry_after_an_erasure(tmp_path, s3_location):
    from streams.store.expire import expire_store

    rig = Rig(tmp_path / "data", location=s3_location)
    rig.ingest([reading("A", m, account="ACC-A") for m in range(6)] + [reading("B", m, account="ACC-B") for m in range(6)])
    erase(rig.pipeline.store, owner=Owner(rig.keys.index_key, rig.keys.unwrappers()), signers=[rig.signer],
          registry=capabilities.registry(), kind="account", subject_id="ACC-A", grace_s=0, data_dir=rig.data)
    rig.ingest([reading("B", m, account="ACC-B", day=2) for m in range(6)])
    report = expire_store(rig.pipeline.store, older_than_s=0)  # the erasure's delete snapshot goes now
    assert report["tables"]["readings"]["expired"] >= 1
    assert connect(rig.pipeline.store).execute("SELECT count(*) FROM readings").fetchone()[0] == 12
