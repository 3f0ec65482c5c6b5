"""Erasure requests: asked by a customer, decided by an administrator, answered with a signed receipt that proves the
erasure's leaf in the signed log; the store shows no name."""

from __future__ import annotations

import json

import pytest

from streams import capabilities
from streams.erasure.job import Owner, erase
from streams.erasure.requests import (decide, get_request, list_requests, receipt, record_outcome, request_erasure,
                                      verify_receipt)
from streams.exceptions import ErasureError
from tests.streams.erasure.conftest import Rig, reading


def test_a_request_is_decided_erased_and_receipted(rig):
    rig.ingest([reading("A", m, account="ACC-A") for m in range(5)])
    store, key = rig.pipeline.store, rig.keys.index_key
    asked = request_erasure(store, index_key=key, requester="customer-ana", meters=["A"], now=1_800_000_000)
    assert asked.status == "open" and asked.deadline.startswith("2027-02-14")  # 30 days
    raw = (store.root / "erasures" / "requests" / f"{asked.request_id}.json").read_text()
    assert "customer-ana" not in raw and '"A"' not in raw  # who asked, for what: sealed
    with pytest.raises(ErasureError, match="open already"):
        request_erasure(store, index_key=key, requester="customer-ana", meters=["A"])
    with pytest.raises(ErasureError, match="needs a reason"):
        decide(store, asked.request_id, index_key=key, by="admin", approve=False)
    approved = decide(store, asked.request_id, index_key=key, by="admin", approve=True)
    report = erase(store, owner=Owner(key, rig.keys.unwrappers()), signers=[rig.signer], registry=capabilities.registry(),
                   kind="meter", subject_id="A", grace_s=0, data_dir=rig.data)
    done = record_outcome(store, approved.request_id, index_key=key, erasure_id=report["erasure_id"])
    assert [r.status for r in list_requests(store, index_key=key, requester="customer-ana")] == ["erased"]
    signed = receipt(store, done, signer=rig.signer)
    body = verify_receipt(json.loads(json.dumps(signed)), rig.keystore.ledger_verifiers)
    assert body["erasure_id"] == report["erasure_id"] and body["status"] == "erased"
    forged = json.loads(json.dumps(signed))
    forged["receipt"]["status"] = "refused"
    with pytest.raises(ErasureError, match="differs"):
        verify_receipt(forged, rig.keystore.ledger_verifiers)
    forged = json.loads(json.dumps(signed))
    forged["signed"] = forged["signed"].replace("erased", "refused")
    with pytest.raises(ErasureError, match="signature"):
        verify_receipt(forged, rig.keystore.ledger_verifiers)


def test_a_refusal_is_receipted_with_its_reason(rig):
    store, key = rig.pipeline.store, rig.keys.index_key
    asked = request_erasure(store, index_key=key, requester="bo", meters=["B"])
    refused = decide(store, asked.request_id, index_key=key, by="admin", approve=False,
                     reason="billing dispute open: kept until it is settled (Art. 17(3)(e))")
    assert get_request(store, asked.request_id, index_key=key).status == "refused"
    body = verify_receipt(receipt(store, refused, signer=rig.signer), rig.keystore.ledger_verifiers)
    assert body["status"] == "refused" and "billing dispute" in body["reason"]
