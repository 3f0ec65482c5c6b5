"""Parties and grants: key files, the registry, grant states and the consent log under signed checkpoints."""

import json

import pytest

from ledger import leaf as leaf_codec
from ledger.audit import audit
from ledger.log import FileCheckpoints
from ledger.note import Signer
from ledger.storage import FileHashStore
from streams.exceptions import KeystoreError, ShareError
from streams.share.grants import (consent_origin, consent_rows, create_grant, get_grant, list_grants,
                                  revoke_grant)
from streams.share.parties import PartyKey, PartyPublicKey, add_party, get_party, list_parties
from streams.store.segments import SegmentStore

INDEX_KEY = bytes(range(32))


@pytest.fixture(scope="module")
def party_key():
    return PartyKey.generate()


@pytest.fixture
def signer():
    return Signer.generate("meterseal-ledger")


def test_party_key_file_round_trip_and_wrong_passphrase(tmp_path, party_key):
    key_path, pub_path = party_key.save(tmp_path / "p", "s3cret")
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    assert party_key.private not in key_path.read_bytes()
    assert PartyKey.load(key_path, "s3cret") == party_key
    assert PartyPublicKey.parse(pub_path.read_text()) == party_key.public_key
    with pytest.raises(KeystoreError, match="wrong party passphrase"):
        PartyKey.load(key_path, "nope")
    with pytest.raises(KeystoreError, match="exists"):
        party_key.save(tmp_path / "p", "s3cret")


def test_hpke_seal_is_bound_to_info(party_key):
    box = party_key.public_key.seal(b"record keys", info=b"grant-1")
    assert party_key.open(box, info=b"grant-1") == b"record keys"
    with pytest.raises(ShareError):
        party_key.open(box, info=b"grant-2")
    with pytest.raises(ShareError):
        PartyKey.generate().open(box, info=b"grant-1")


def test_registry(tmp_path, party_key):
    party = add_party(tmp_path, "acme", party_key.public_key, now=1.0)
    assert get_party(tmp_path, "acme") == party
    assert add_party(tmp_path, "acme", party_key.public_key) == party  # idempotent
    with pytest.raises(ShareError, match="already registered"):
        add_party(tmp_path, "acme", PartyKey.generate().public_key)
    with pytest.raises(ShareError, match="bad party name"):
        add_party(tmp_path, "../x", party_key.public_key)
    with pytest.raises(ShareError, match="party add"):
        get_party(tmp_path, "nobody")
    assert [p.name for p in list_parties(tmp_path)] == ["acme"]


def test_grant_lifecycle_states_and_consent_log(tmp_path, party_key, signer):
    party = add_party(tmp_path, "acme", party_key.public_key)
    g = create_grant(tmp_path, signer=signer, index_key=INDEX_KEY, party=party, meters=["65849108"],
                     start="2023-01-01", end="2023-12-31", purpose="tariff advice", now=1000.0)
    assert g.state == "active" and g.created_leaf == 0 and g.meters == ("65849108",)
    e = create_grant(tmp_path, signer=signer, index_key=INDEX_KEY, party=party, region="north", kind="bills",
                     fields=["Meter No.", "Date", "Billed Unit"], start="2023-01-01", end="2023-01-31",
                     expires_at="1970-01-01T00:30:00Z", now=1000.0)
    assert get_grant(tmp_path, e.grant_id, index_key=INDEX_KEY, now=1000.0).state == "active"
    assert get_grant(tmp_path, e.grant_id, index_key=INDEX_KEY, now=1800.0).state == "expired"
    r = revoke_grant(tmp_path, g.grant_id, signer=signer, index_key=INDEX_KEY, reason="asked", now=2000.0)
    assert r.state == "revoked" and r.revoked_leaf == 2
    with pytest.raises(ShareError, match="already revoked"):
        revoke_grant(tmp_path, g.grant_id, signer=signer, index_key=INDEX_KEY)
    states = {x.grant_id: x.state for x in list_grants(tmp_path, index_key=INDEX_KEY, now=3000.0)}
    assert states == {g.grant_id: "revoked", e.grant_id: "expired"}
    assert [x.grant_id for x in list_grants(tmp_path, index_key=INDEX_KEY, meters=["65849108"])] == [g.grant_id]
    with pytest.raises(ShareError, match="revoked"):
        get_grant(tmp_path, g.grant_id, index_key=INDEX_KEY).check_active()
    assert json.loads(json.dumps(r.to_dict()))["state"] == "revoked"

    # the store holds no meter id in clear; every event is a leaf under a signed checkpoint
    assert not any(b"65849108" in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    store = SegmentStore(tmp_path)
    hashes = FileHashStore(store.hash_path("consent", 0)).read()
    notes = FileCheckpoints(store.checkpoint_dir("consent", 0)).all()
    summary, findings = audit(consent_origin(signer.verifier.key_hash.hex()), hashes, consent_rows(tmp_path), notes,
                              signer.verifier, encode=leaf_codec.encode_consent_event)
    assert findings == [] and summary.leaves == 3 and summary.signed_size == 3
    # a changed event (the revocation's time) is named by the audit
    path = sorted((tmp_path / "consent" / "events").glob("*.json"))[2]
    doc = json.loads(path.read_text())
    doc["at_ms"] += 1
    path.write_text(json.dumps(doc))
    _, findings = audit(consent_origin(signer.verifier.key_hash.hex()), hashes, consent_rows(tmp_path), notes,
                        signer.verifier, encode=leaf_codec.encode_consent_event)
    assert [(f.kind, f.index) for f in findings] == [("modified", 2)]


@pytest.mark.parametrize("kwargs, message", [
    ({"meters": ["1"], "region": "north"}, "exactly one scope"),
    ({}, "exactly one scope"),
    ({"meters": ["1"], "start": "2023-02-01", "end": "2023-01-01"}, "empty date range"),
    ({"meters": ["1"], "kind": "gas"}, "unknown kind"),
    ({"meters": ["1"], "fields": ["Name", "shoe size"]}, "unknown field"),
    ({"meters": ["1"], "expires_at": "2000-01-01"}, "already past"),
    ({"meters": ["1"], "start": "2023-13-01"}, "bad date"),
])
def test_bad_grants_are_refused(tmp_path, party_key, signer, kwargs, message):
    party = add_party(tmp_path, "acme", party_key.public_key)
    args = {"start": "2023-01-01", "end": "2023-01-31", "kind": "bills", **kwargs}
    with pytest.raises(ShareError, match=message):
        create_grant(tmp_path, signer=signer, index_key=INDEX_KEY, party=party, **args)
    assert not (tmp_path / "consent").exists()


def test_an_older_keystore_gets_its_post_quantum_ledger_key(tmp_path):
    import json as _json

    from click.testing import CliRunner

    from streams.cli.main import main
    from streams.keys.keystore import Keystore

    Keystore.init(tmp_path, "pw")
    path = tmp_path / "keystore.json"
    doc = _json.loads(path.read_text())
    doc.pop("ledger_pq")  # as keystores were before ML-DSA-65 checkpoints
    path.write_text(_json.dumps(doc))
    old = Keystore.load(tmp_path)
    assert old.ledger_pq_verifier is None and old.ledger_signer("pw").cosigners == ()
    result = CliRunner().invoke(main, ["keys", "ledger-pq"], env={"METERSEAL_DATA_DIR": str(tmp_path),
                                                                   "METERSEAL_PASSPHRASE": "pw"})
    assert result.exit_code == 0 and "meterseal-ledger-mldsa65+" in result.output
    new = Keystore.load(tmp_path)
    assert [c.verifier for c in new.ledger_signer("pw").cosigners] == [new.ledger_pq_verifier]
