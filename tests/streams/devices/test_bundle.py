"""A share bundle of signed readings: the recipient checks each reading's device signature offline."""

from __future__ import annotations

import base64
import json

import pytest

from streams.devices import signed
from streams.devices.keys import DeviceKey
from streams.devices.registry import add_device
from streams.exceptions import ShareError
from streams.keys.keystore import Keystore
from streams.pipeline import BatchState, Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.share.bundle import export_bundle, open_bundle
from streams.share.grants import create_grant
from streams.share.parties import PartyKey, add_party
from streams.store.segments import SegmentStore


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    data = tmp_path_factory.mktemp("bundle")
    keystore = Keystore.init(data, "pw")
    keys, signer = keystore.unlock("pw"), keystore.ledger_signer("pw")
    p = Pipeline(Settings.from_env({}, data_dir=data), keys.index_key, keystore.owner_public,
                 SegmentStore(data / "store"), signer, clock=lambda: 1.8e9)
    device = DeviceKey.generate("Ed25519")
    add_device(p.store, signer=signer, index_key=keys.index_key, meter_id="m1", public_key=device.public_key)
    readings = [{"meter_id": "m1", "ts": f"2026-03-01T{h:02d}:00:00Z", "kwh": 0.5, "register_kwh": 10.0 + h,
                 "region": "north", "category": "Domestic"} for h in range(4)]
    messages = [signed.sign_reading(r, device, seq=h) for h, r in enumerate(readings[:3])] + [json.dumps(readings[3]).encode()]
    out = p.seal_messages(messages, [Source("readings.raw", 0, i) for i in range(4)], lambda t: None,
                          windows=BatchState(p.windows, {}), keys=[b"m1"] * 4)
    p.store_sealed("readings", 0, [(i, o[0].record) for i, o in enumerate(out)])
    p.checkpoint_due(force=True)
    party = PartyKey.generate()
    grant = create_grant(p.store, signer=signer, index_key=keys.index_key, party=add_party(p.store, "acme", party.public_key),
                         meters=["m1"], start="2026-03-01", end="2026-03-01")
    blob, _ = export_bundle(p.store, grant.grant_id, owner=keys, signer=signer)
    return blob, party, keystore.ledger_verifiers, device


def test_the_recipient_sees_which_readings_the_meter_signed(bundle):
    blob, party, verifiers, device = bundle
    opened = open_bundle(blob, party=party, verifiers=verifiers)
    devices = sorted((r["ts"], r["device"]) for r in opened.records)
    assert [d for _, d in devices[:3]] == [{"kid": device.public_key.kid, "alg": "Ed25519", "seq": h, "verified": True}
                                           for h in range(3)]
    assert devices[3][1] is None  # the unsigned one: not device-signed
    assert "device" not in opened.verifiable_fields


def test_a_swapped_device_key_in_the_bundle_fails(bundle):
    blob, party, verifiers, device = bundle
    doc = json.loads(blob)
    doc["devices"][device.public_key.kid] = base64.b64encode(DeviceKey.generate("Ed25519").public_key.spki).decode()
    with pytest.raises(ShareError, match="device signature does not verify"):
        open_bundle(json.dumps(doc).encode(), party=party, verifiers=verifiers)
