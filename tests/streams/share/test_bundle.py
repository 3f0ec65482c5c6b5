"""Share bundles: exactly the grant's records, verifiable offline, and nothing else opens with them."""

from __future__ import annotations

import base64
import json
import random

import pytest

from ledger.note import Signer, sign
from streams.crypto import envelope as env
from streams.exceptions import InvalidEnvelope, ShareError
from streams.seal import record_aad
from streams.share.bundle import export_bundle, open_bundle
from streams.share.grants import create_grant, revoke_grant
from streams.share.parties import PartyKey
from streams.store.segments import connect


def _grant(shared_store, party, **kwargs):
    data, _, keys, signer, _, _ = shared_store
    return create_grant(data / "store", signer=signer, index_key=keys.index_key, party=party, **kwargs)


def _export(shared_store, grant_id):
    data, _, keys, signer, _, _ = shared_store
    return export_bundle(data / "store", grant_id, owner=keys, signer=signer)


@pytest.fixture(scope="module")
def meter_bundle(shared_store, party):
    grant = _grant(shared_store, party, meters=["M-A"], start="2024-03-02", end="2024-03-03")
    blob, summary = _export(shared_store, grant.grant_id)
    return grant, blob, summary


def test_bundle_opens_to_exactly_the_in_scope_records(shared_store, party_key, meter_bundle):
    _, keystore, _, _, readings, _ = shared_store
    grant, blob, summary = meter_bundle
    opened = open_bundle(blob, party=party_key, verifiers=[keystore.ledger_verifier])
    want = [r for r in readings if r["meter_id"] == "M-A" and "2024-03-02" <= r["ts"][:10] <= "2024-03-03"]
    got = [{k: v for k, v in r.items() if k not in ("record_id", "leaf_index", "log", "verified", "device")}
           for r in opened.records]
    assert all(r["device"] is None for r in opened.records)  # none is device-signed: marked so
    assert sorted(got, key=lambda r: r["ts"]) == want and len(want) == 48 == summary["record_keys"]
    assert all(r["verified"] is True and len(r["record_id"]) == 32 for r in opened.records)
    assert opened.verifiable_fields == sorted(want[0]) and opened.attested_fields == []
    assert opened.checked_keys == ["meterseal-ledger"]
    assert [c["event"] for c in opened.consent] == ["grant"]
    import gzip  # a bundle written as FILE.gz opens the same

    assert open_bundle(gzip.compress(blob), party=party_key, verifiers=[keystore.ledger_verifier]).records == opened.records


def test_a_recipient_trusting_only_the_post_quantum_key_verifies(shared_store, party_key, meter_bundle):
    keystore = shared_store[1]
    _, blob, _ = meter_bundle
    opened = open_bundle(blob, party=party_key, verifiers=[keystore.ledger_pq_verifier])
    assert opened.checked_keys == ["meterseal-ledger-mldsa65"] and len(opened.records) == 48
    both = open_bundle(blob, party=party_key, verifiers=keystore.ledger_verifiers)
    assert both.checked_keys == ["meterseal-ledger", "meterseal-ledger-mldsa65"]


def test_no_key_in_a_bundle_opens_any_other_record(shared_store, party_key, meter_bundle):
    """Every record key the bundle carries, tried on every record of the store (other meters under the same
    DEKs included): each opens its own record and nothing else."""
    data = shared_store[0]
    _, blob, _ = meter_bundle
    doc = json.loads(blob)
    payload = json.loads(party_key.open(base64.b64decode(doc["sealed"]), info=b"meterseal/share/v1|" + doc["grant_id"].encode()))
    keys = {e["row"]["record_id"]: bytes.fromhex(s["key"]) for e, s in zip(doc["records"], payload["records"])}
    con = connect(data / "store")
    rows = []
    for table in ("readings", "bills"):
        cur = con.execute(f"SELECT * FROM {table}")
        rows += [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
    shared_deks = {bytes(r["envelope"])[1:17] for r in rows if r["record_id"] in keys}
    others = [r for r in rows if r["record_id"] not in keys]
    assert any(bytes(r["envelope"])[1:17] in shared_deks for r in others)  # same DEK, other records: tried too
    opened = 0
    for rid, key in keys.items():
        for row in rows:
            try:
                env.open_with_record_key(key, bytes(row["envelope"]), aad=record_aad(row))
            except InvalidEnvelope:
                continue
            assert row["record_id"] == rid
            opened += 1
    assert opened == len(keys)
    # the bundle carries no DEK: no 32-byte secret of any DEK appears in its sealed payload
    assert len(rows) > 1000 and len(others) == len(rows) - len(keys)


def test_tampering_fails_naming_what(shared_store, party_key, meter_bundle):
    vk = [shared_store[1].ledger_verifier]
    _, blob, _ = meter_bundle
    doc = json.loads(blob)

    def opened(d):
        return open_bundle(json.dumps(d).encode(), party=party_key, verifiers=vk)

    bad = json.loads(blob)
    bad["records"][3]["row"]["meter_seq"] += 1
    with pytest.raises(ShareError, match=r"record 3 .*inclusion proof does not verify"):
        opened(bad)
    bad = json.loads(blob)
    env_bytes = bytearray(base64.b64decode(bad["records"][5]["row"]["envelope"]))
    env_bytes[-1] ^= 1
    bad["records"][5]["row"]["envelope"] = base64.b64encode(bytes(env_bytes)).decode()
    with pytest.raises(ShareError, match=r"record 5 .*inclusion proof"):
        opened(bad)
    bad = json.loads(blob)  # a proof against another (older) checkpoint of the same log
    store = shared_store[0] / "store"
    log = doc["records"][0]["log"].split("/")
    older = sorted((store / "ledger" / log[0] / f"p{int(log[1]):03d}").glob("*.note"))[0].read_text()
    assert older != bad["checkpoints"][0]
    bad["checkpoints"][0] = older
    with pytest.raises(ShareError, match=r"record 0 .*inclusion proof does not verify"):
        opened(bad)
    bad = json.loads(blob)  # a checkpoint of another log
    bad["checkpoints"][0] = (store / "ledger" / "bills" / "p000").glob("*.note").__next__().read_text()
    with pytest.raises(ShareError, match=r"record 0 .*checkpoint is for log .*bills/0, not readings"):
        opened(bad)
    bad = json.loads(blob)  # a forged checkpoint signature: same key name, another key
    text = bad["checkpoints"][0].rpartition("\n\n")[0] + "\n"
    bad["checkpoints"][0] = sign(text, Signer.generate("meterseal-ledger"))
    with pytest.raises(ShareError, match="checkpoint 0 of the bundle"):
        opened(bad)
    with pytest.raises(ShareError, match="do not open with this party key"):
        open_bundle(blob, party=PartyKey.generate(), verifiers=vk)
    with pytest.raises(ShareError, match="checkpoint 0"):  # a recipient trusting another key
        open_bundle(blob, party=party_key, verifiers=[Signer.generate("meterseal-ledger").verifier])
    bad = json.loads(blob)  # values changed after export (not in any leaf): the owner's signature catches it
    bad["grant"]["end"] = "2030-01-01"
    with pytest.raises(ShareError, match="owner's signature over the bundle"):
        opened(bad)


def test_any_flipped_byte_fails(shared_store, party_key, meter_bundle):
    """With both checkpoint keys trusted, every byte is checked (with one key, the other key's signature lines
    are, as C2SP says, ignored)."""
    vk = shared_store[1].ledger_verifiers
    _, blob, _ = meter_bundle
    rng = random.Random(16)
    for at in rng.sample(range(len(blob)), 60) + [0, len(blob) - 1, blob.index(b'"sealed"') + 20]:
        bad = bytearray(blob)
        bad[at] ^= 1 << rng.randrange(8)
        with pytest.raises(ShareError):
            open_bundle(bytes(bad), party=party_key, verifiers=vk)


def test_revoked_and_expired_grants_are_refused(shared_store, party):
    data, _, keys, signer, _, _ = shared_store
    g = _grant(shared_store, party, meters=["M-B"], start="2024-03-01", end="2024-03-05")
    revoke_grant(data / "store", g.grant_id, signer=signer, index_key=keys.index_key)
    with pytest.raises(ShareError, match="revoked"):
        _export(shared_store, g.grant_id)
    e = _grant(shared_store, party, meters=["M-B"], start="2024-03-01", end="2024-03-05",
               expires_at="2100-01-01T00:00:00Z")
    with pytest.raises(ShareError, match="expired"):
        export_bundle(data / "store", e.grant_id, owner=keys, signer=signer, now=4102444800.0)


def test_bills_without_personal_fields_never_carry_them(shared_store, party_key, party):
    _, keystore, _, _, _, bills = shared_store
    region_bills = [b for b in bills if b["Region"] == "north"] if "Region" in bills[0] else None
    fields = ["Meter No.", "Date", "Bill No.", "Billed Unit", "Total Due", "Category"]
    grant = _grant(shared_store, party, kind="bills", accounts=[b["Account ID"] for b in bills[:40]],
                   start="2019-01-01", end="2025-12-31", fields=fields)
    blob, summary = _export(shared_store, grant.grant_id)
    opened = open_bundle(blob, party=party_key, verifiers=[keystore.ledger_verifier])
    want = sorted(str(b["Bill No."]) for b in bills[:40])
    assert sorted(str(r["Bill No."]) for r in opened.records) == want and summary["record_keys"] == 0
    assert all(set(r) == set(fields) | {"record_id", "leaf_index", "log", "verified"} for r in opened.records)
    assert opened.attested_fields == sorted(fields) and opened.verifiable_fields == []
    output = json.dumps([r for r in opened.records]).encode()
    for b in bills:
        for column in ("Name", "Address", "Phone No."):
            needle = str(b[column]).encode()
            assert needle not in blob and needle not in output, (column, needle)
    assert region_bills is None or region_bills
