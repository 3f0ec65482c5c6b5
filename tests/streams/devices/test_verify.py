"""The step before the Sealer, through the worker's own ``Pipeline.seal_messages``: signed readings sealed as
reading v3 with their device fields; every bad signed message a dead letter with its rule and its whole envelope."""

from __future__ import annotations

import json

import pytest

from ledger.note import Signer

from streams.devices import signed
from streams.devices.keys import DeviceKey
from streams.devices.registry import add_device, revoke_device
from streams.ingest import forwarded
from streams.keys.owner import OwnerKeyPair
from streams.pipeline import BatchState, Pipeline
from streams.seal import Rejected, Sealed, Source
from streams.settings import Settings
from streams.store.segments import SegmentStore
from streams.unseal import open_record

OWNER = OwnerKeyPair.generate()
NOW = 1.8e9
READING = {"meter_id": "m1", "ts": "2026-12-01T10:00:00Z", "kwh": 0.25, "register_kwh": 100.0, "region": "north",
           "category": "Domestic"}


@pytest.fixture
def rig(tmp_path, es256, ed25519):
    """A pipeline over a store whose registry holds m1's ES256 key and m2's Ed25519 key."""
    def make(**settings):
        s = Settings.from_env({}, data_dir=tmp_path, **settings)
        p = Pipeline(s, bytes(32), OWNER.public_key, SegmentStore(tmp_path / "store"), clock=lambda: NOW)
        signer = Signer.generate("meterseal-ledger")
        for meter, key in (("m1", es256), ("m2", ed25519)):
            add_device(p.store, signer=signer, index_key=bytes(32), meter_id=meter, public_key=key.public_key)
        return p, signer
    return make


def _seal(p, messages, keys=None, rejects=None, windows=None):
    windows = windows if windows is not None else BatchState(p.windows, {})
    out = p.seal_messages(messages, [Source("readings.raw", 0, i) for i in range(len(messages))], lambda t: None,
                          windows=windows, keys=keys or [b"m1"] * len(messages), rejects=rejects)
    return [o for outcomes in out for o in outcomes], windows


def _reading(i: int, **changes) -> dict:
    return {**READING, "ts": f"2026-12-01T10:{i:02d}:00Z", "register_kwh": 100.0 + i, **changes}


def test_a_signed_reading_is_sealed_as_v3_with_its_signature_inside_the_envelope(rig, es256):
    p, _ = rig()
    data = signed.sign_reading(_reading(0), es256, seq=41)
    (out,), windows = _seal(p, [data, ])
    assert isinstance(out, Sealed) and out.record["schema_version"] == 3
    plain = open_record(out.record, _keyring(p))
    assert plain["device"]["kid"] == es256.public_key.kid and plain["device"]["seq"] == 41
    assert plain["device"]["payload"] == signed.parse(data).payload and plain["kwh"] == 0.25
    assert es256.public_key.kid.encode() not in out.body  # the KEY_ID is sealed, not in clear
    flushed = {}
    windows.flush(lambda k, v, ctx: flushed.update({k: v}))
    assert len(flushed) == 1 and es256.public_key.kid.encode() not in next(iter(flushed))


def _keyring(p):
    """The owner's keyring over the DEKs the pipeline made (each wrapped for the owner and kept in the store)."""
    from streams.keys.keyring import Keyring

    return Keyring(p.store, {OWNER.public_key.fingerprint: OWNER.unwrapper()}, index_key=bytes(32))


def test_unsigned_readings_pass_as_before_and_are_refused_when_signatures_are_required(rig):
    p, _ = rig()
    data = json.dumps(_reading(0)).encode()
    assert p.devices.check_all([data], BatchState(p.windows, {})) is None  # no signed envelope: nothing to do
    (out,), _ = _seal(p, [data])
    assert isinstance(out, Sealed) and out.record["schema_version"] == 2
    assert open_record(out.record, _keyring(p))["device"] is None
    strict, _ = rig(require_signed=True)
    (refused,), _ = _seal(strict, [data])
    assert isinstance(refused, Rejected) and refused.record["rule"] == "signature"


def test_every_bad_signed_message_is_a_dead_letter_with_its_rule(rig, es256, ed25519):
    p, owner_signer = rig()
    stranger = DeviceKey.generate("ES256")
    good = signed.sign_reading(_reading(1), es256, seq=10)
    envelope = signed.parse(good)
    cases = {
        "unknown key": (signed.sign_reading(_reading(2), stranger, seq=1), "device"),
        "another device's key": (signed.sign_reading(_reading(3), ed25519, seq=1), "device"),  # m2's key, m1's reading
        "signature over other bytes": (signed.encode(envelope._replace(payload=envelope.payload.replace(b"0.25", b"0.26"))),
                                       "signature"),
        "signed by another key, claiming m1's": (signed.encode(signed.Signed(
            envelope.payload, "ES256", es256.public_key.kid, stranger.sign(envelope.payload))), "signature"),
        "wrong alg": (signed.encode(envelope._replace(alg="Ed25519")), "signature"),
        "batch payload": (signed.encode(_signed_raw(es256, b"[]")), "decode"),
        "no device_seq": (signed.encode(_signed_raw(es256, json.dumps(_reading(4)).encode())), "schema"),
        "bad reading": (signed.sign_reading(_reading(5, kwh=-1), es256, seq=11), "kwh"),
    }
    outcomes, windows = _seal(p, [good] + [data for data, _ in cases.values()])
    assert isinstance(outcomes[0], Sealed)
    rules = {name: o.record["rule"] for name, o in zip(cases, outcomes[1:])}
    assert rules == {name: rule for name, (_, rule) in cases.items()}
    # a dead letter seals the whole envelope, so nothing of what the meter sent is lost
    from streams.crypto import envelope as env
    from streams.seal import dlq_aad

    for (data, _), dead in zip(cases.values(), outcomes[1:]):
        assert env.open_with(_keyring(p), dead.record["envelope"], aad=dlq_aad(dead.record["dlq_id"])) == data
    # replay and redelivery, through the same windows (the worker's table between batches)
    again, _ = _seal(p, [good, signed.sign_reading(_reading(6), es256, seq=10)], windows=windows)
    assert isinstance(again[0], Sealed) and again[0].record["record_id"] == outcomes[0].record["record_id"]
    assert again[1].record["rule"] == "replay"  # seq 10 used before for another reading
    revoke_device(p.store, es256.public_key.kid, signer=owner_signer, index_key=bytes(32))
    p.directory.refresh()
    (revoked,), _ = _seal(p, [signed.sign_reading(_reading(7), es256, seq=12)], windows=windows)
    assert revoked.record["rule"] == "device" and "revoked" in revoked.record["reason"]


def _signed_raw(key: DeviceKey, payload: bytes) -> signed.Signed:
    return signed.Signed(payload, key.alg, key.public_key.kid, key.sign(payload))


def test_a_forwarded_rejection_becomes_its_dead_letter(rig):
    p, _ = rig()
    data = json.dumps(_reading(0, meter_id="m2")).encode()
    (out,), _ = _seal(p, [data], rejects=[forwarded.rejection(forwarded.header("topic"))])
    assert isinstance(out, Rejected) and out.record["rule"] == "topic"


def test_a_signed_reading_keyed_by_another_meter_is_a_key_dead_letter(rig, es256):
    p, _ = rig()
    (out,), _ = _seal(p, [signed.sign_reading(_reading(0), es256, seq=1)], keys=[b"m2"])
    assert isinstance(out, Rejected) and out.record["rule"] == "key"
