"""The device proof: made by the owner, checked offline with the device's public key and the ledger vkey alone."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from ledger.note import Signer, Verifier

from streams.devices import signed
from streams.devices.keys import DeviceError, DeviceKey
from streams.devices.proof import check_device_proof, device_proof
from streams.devices.registry import add_device
from streams.keys.keyring import Keyring
from streams.keys.owner import OwnerKeyPair
from streams.pipeline import BatchState, Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.audit import find_record
from streams.store.segments import SegmentStore

OWNER = OwnerKeyPair.generate()
SIGNER = Signer.generate("meterseal-ledger")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A store holding m1's signed readings and one unsigned reading, all under a signed checkpoint."""
    tmp = tmp_path_factory.mktemp("proof")
    key = DeviceKey.generate("ES256")
    p = Pipeline(Settings.from_env({}, data_dir=tmp), bytes(32), OWNER.public_key, SegmentStore(tmp / "store"),
                 SIGNER, clock=lambda: 1.8e9)
    add_device(p.store, signer=SIGNER, index_key=bytes(32), meter_id="m1", public_key=key.public_key)
    readings = [{"meter_id": "m1", "ts": f"2026-12-01T10:{i:02d}:00Z", "kwh": 0.5, "register_kwh": 10.0 + i,
                 "region": "north", "category": "Domestic"} for i in range(3)]
    messages = [signed.sign_reading(r, key, seq=i) for i, r in enumerate(readings[:2])]
    messages.append(json.dumps(readings[2]).encode())
    out = p.seal_messages(messages, [Source("readings.raw", 0, i) for i in range(3)], lambda t: None,
                          windows=BatchState(p.windows, {}), keys=[b"m1"] * 3)
    p.store_sealed("readings", 0, [(i, o[0].record) for i, o in enumerate(out)])
    p.checkpoint_due(force=True)
    keyring = Keyring(p.store, {OWNER.public_key.fingerprint: OWNER.unwrapper()}, index_key=bytes(32))
    ids = [o[0].record["record_id"] for o in out]
    return p.store, keyring, key, ids


def _proof(stored, n=0):
    store, keyring, _, ids = stored
    return device_proof(store, *find_record(store, ids[n]), keyring=keyring, vkey=SIGNER.verifier.vkey)


def test_a_third_party_checks_the_proof_with_the_device_key_and_the_vkey_only(stored):
    _, _, key, ids = stored
    doc = json.loads(json.dumps(_proof(stored, 1)))  # as it travels: JSON
    got = check_device_proof(doc, verifiers=[Verifier.from_vkey(SIGNER.verifier.vkey)], device_key=key.public_key)
    assert (got["record_id"], got["meter_id"], got["kid"], got["device_seq"], got["leaf_index"]) == (
        ids[1], "m1", key.public_key.kid, 1, 1)
    assert doc["device"]["kid"] == key.public_key.kid and base64.b64decode(doc["device"]["sig"])


def test_an_unsigned_reading_has_no_device_proof(stored):
    with pytest.raises(DeviceError, match="not device-signed"):
        _proof(stored, 2)


@pytest.mark.parametrize("tamper, reason", [
    (lambda d: d["row"].update(meter_seq=7), "leaf is not the encoding"),
    (lambda d: d.update(record_key=_other(d["record_key"])), "does not open"),
    (lambda d: d.update(audit_path=d["audit_path"][::-1] or ["00" * 32]), "ledger"),
    (lambda d: d.update(checkpoint=d["checkpoint"].replace("\n\n", "\nx\n\n", 1)), "ledger"),
])
def test_a_changed_proof_fails(stored, tamper, reason):
    _, _, key, _ = stored
    doc = copy.deepcopy(_proof(stored))
    tamper(doc)
    with pytest.raises(DeviceError, match=reason):
        check_device_proof(doc, verifiers=[SIGNER.verifier], device_key=key.public_key)


def _other(hex_key: str) -> str:
    return ("0" if hex_key[0] != "0" else "1") + hex_key[1:]


def test_another_device_key_or_ledger_key_fails(stored):
    _, _, key, _ = stored
    doc = _proof(stored)
    with pytest.raises(DeviceError, match="not by the key given"):
        check_device_proof(doc, verifiers=[SIGNER.verifier], device_key=DeviceKey.generate("ES256").public_key)
    with pytest.raises(DeviceError, match="ledger"):
        check_device_proof(doc, verifiers=[Signer.generate("meterseal-ledger").verifier], device_key=key.public_key)
