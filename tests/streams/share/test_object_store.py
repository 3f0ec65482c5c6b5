"""Sharing, the console, DP queries and FL provenance through the one store interface on Iceberg + S3
(``objectstore``): the share test store migrated to S3, then each feature gives the local store's answers."""

from __future__ import annotations

from streams import capabilities

import shutil
import uuid

import numpy as np
import pytest

from streams.console.data import Vault
from streams.privacy import budget, dp, engine
from streams.share.bundle import export_bundle, open_bundle
from streams.share.grants import consent_rows, create_grant, list_grants
from streams.share.parties import PartyKey, add_party, list_parties
from streams.store.audit import audit_store
from streams.store.base import open_store
from streams.store.migrate import migrate
from streams.store.segments import SegmentStore

from .conftest import DAYS, PASS

pytestmark = pytest.mark.objectstore


@pytest.fixture(scope="module")
def stores(objectstore, shared_store, tmp_path_factory):
    """(local store, the same store migrated to a fresh S3 bucket) and the share fixture's keys."""
    from streams.store.objects import s3_client

    data, keystore, keys, signer, _, _ = shared_store
    copy = tmp_path_factory.mktemp("s3-source")  # the session's store stays as the other share tests left it
    shutil.copytree(data, copy, dirs_exist_ok=True)
    data = copy
    bucket = f"ms-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    local = SegmentStore(data / "store")
    add_party(local, "acme-local", PartyKey.generate().public_key)  # a party and a grant to migrate
    create_grant(local, signer=signer, index_key=keys.index_key, party=list_parties(local)[0], meters=["M-C"],
                 start=DAYS[0], end=DAYS[-1])
    remote = open_store(f"s3://{bucket}/store", work_dir=tmp_path_factory.mktemp("s3-work"))
    migrate(local, remote, keystore.ledger_verifier, registry=capabilities.registry())
    return local, remote, data, keystore, keys, signer


def test_parties_grants_and_consent_log_are_store_objects_on_s3(stores):
    local, remote, _, keystore, keys, _ = stores
    assert [p.name for p in list_parties(remote)] == [p.name for p in list_parties(local)]
    assert consent_rows(remote) == consent_rows(local)
    assert [g.grant_id for g in list_grants(remote, index_key=keys.index_key)] == \
        [g.grant_id for g in list_grants(local, index_key=keys.index_key)]
    assert ("consent", 0) in remote.log_keys()


def test_share_export_on_s3_opens_and_verifies_at_the_recipient(stores):
    _, remote, _, keystore, keys, signer = stores
    recipient = PartyKey.generate()
    party = add_party(remote, "acme-s3", recipient.public_key)
    grant = create_grant(remote, signer=signer, index_key=keys.index_key, party=party, meters=["M-A"],
                         start=DAYS[0], end=DAYS[1])
    blob, summary = export_bundle(remote, grant.grant_id, owner=keys, signer=signer)
    opened = open_bundle(blob, party=recipient, verifiers=[keystore.ledger_verifier])
    assert summary["records"] == len(opened.records) == 2 * 24  # M-A's hourly readings of two days
    assert {r["meter_id"] for r in opened.records} == {"M-A"} and all(r["verified"] is True for r in opened.records)
    assert [c["event"] for c in opened.consent] == ["grant"]
    problems = [f for _, findings in audit_store(remote, keystore.ledger_verifier, registry=capabilities.registry()) for f in findings]
    assert problems == []  # the new grant's consent leaf is in the S3 tile log, signed


def test_console_reads_the_same_on_s3(stores):
    local, remote, data, _, _, _ = stores
    on_local, on_s3 = Vault.open(data, PASS, store=local), Vault.open(data, PASS, store=remote)
    assert on_s3.readings("M-B", DAYS[0], DAYS[2]) == on_local.readings("M-B", DAYS[0], DAYS[2]) != []
    assert on_s3.fleet(now_ms=0)["totals"] == on_local.fleet(now_ms=0)["totals"]
    assert on_s3.key_status()["deks"] == on_local.key_status()["deks"] > 0
    logs = {c["log"]: c["size"] for c in on_s3.checkpoints()}
    assert {k: v for k, v in logs.items() if k.startswith(("readings", "bills"))} == \
        {c["log"]: c["size"] for c in on_local.checkpoints() if c["log"].startswith(("readings", "bills"))}
    record_id = on_local.readings("M-B", DAYS[0], DAYS[0])[0]["record_id"]
    assert on_s3.proof(record_id) == on_local.proof(record_id)


def test_dp_query_reads_records_from_s3_and_keeps_budgets_in_the_data_dir(stores, tmp_path):
    local, remote, _, keystore, keys, signer = stores
    query = dp.DPQuery(metric="count", by=("region",), start=DAYS[0], end=DAYS[-1], regions=("north", "south"))
    assert engine._columns(remote, keys, query).kwh.size == engine._columns(local, keys, query).kwh.size == 3 * 5 * 24
    engine.set_budget(tmp_path, signer=signer, rho=1.0, analyst="ana")
    answer = engine.answer_query(tmp_path, owner=keys, signer=signer, analyst="ana", query=query, rho=0.5,
                                 default_dataset_rho=10.0, records=remote)
    assert sorted(r["region"] for r in answer.rows) == ["north", "south"] and answer.spend_leaf == 1
    with pytest.raises(dp.DPError, match="local files in the data owner's data dir"):
        budget.load(remote.location)


def test_fl_region_counts_and_model_provenance_on_s3(stores):
    from fl.provenance import model_rows, record_model
    from fl.schedule import region_counts

    local, remote, _, keystore, _, signer = stores
    assert region_counts(remote) == region_counts(local) == {"north": 240, "south": 120}
    row = record_model(remote, signer, [np.arange(6, dtype=np.float32)], run_id="r1", round_=1, strategy="fedavg",
                       metrics={"mae": 0.1})
    assert [(r["model_sha256"], r["weights_ok"]) for r in model_rows(remote)] == [(row["model_sha256"], True)]
    assert remote.blobs.exists("models/r1/round-001.weights") and not (local.root / "models" / "r1").exists()
    results = audit_store(remote, keystore.ledger_verifier, registry=capabilities.registry())
    assert any("/models/" in s.log for s, _ in results) and not [f for _, fs in results for f in fs]
