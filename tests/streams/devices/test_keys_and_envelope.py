"""Device keys (KEY_ID, both algorithms, files) and the signed envelope: what a meter sends."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.devices import signed
from streams.devices.keys import DeviceError, DeviceKey, DevicePublicKey
from streams.exceptions import InvalidInput


@pytest.mark.parametrize("alg", ["ES256", "Ed25519"])
def test_kid_is_the_sha256_of_the_der_spki_and_survives_pem_files(tmp_path, alg):
    key = DeviceKey.generate(alg)
    key_path, pub_path = key.save(tmp_path, "m1")
    public = DevicePublicKey.read(pub_path)
    assert public.kid == hashlib.sha256(public.spki).hexdigest() == key.public_key.kid
    assert public.alg == alg and public.spki[:1] == b"\x30"  # DER SEQUENCE
    assert DeviceKey.read(key_path).public_key == public
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(DeviceError, match="exists"):
        key.save(tmp_path, "m1")


def test_es256_signatures_are_asn1_der(es256):
    sig = es256.sign(b"reading")
    assert sig[0] == 0x30 and sig[1] == len(sig) - 2  # SEQUENCE { r INTEGER, s INTEGER }
    assert es256.public_key.verify(b"reading", sig)


def test_other_keys_are_refused_with_what_to_give():
    from streams.crypto import _primitives

    rsa = _primitives.public_pem(_primitives.rsa_generate()[1])
    with pytest.raises(DeviceError, match="ECDSA P-256 or Ed25519"):
        DevicePublicKey.parse(rsa)
    with pytest.raises(DeviceError, match="not a device public key"):
        DevicePublicKey.parse("not a key")


@settings(max_examples=50, deadline=None)
@given(kwh=st.floats(0, 1e4, allow_nan=False), seq=st.integers(0, 2**63 - 1), flip=st.integers(0, 10_000))
def test_any_single_bit_changed_in_the_payload_fails_the_signature(ed25519, kwh, seq, flip):
    data = signed.sign_reading({"meter_id": "m1", "ts": "2025-01-01T00:00:00Z", "kwh": kwh}, ed25519, seq=seq)
    envelope = signed.parse(data)
    assert ed25519.public_key.verify(envelope.payload, envelope.sig)
    assert json.loads(envelope.payload)["device_seq"] == seq
    bit = flip % (8 * len(envelope.payload))
    changed = bytearray(envelope.payload)
    changed[bit // 8] ^= 1 << bit % 8
    assert not ed25519.public_key.verify(bytes(changed), envelope.sig)


@pytest.mark.parametrize("doc, reason", [
    ({"payload": "e30=", "alg": "ES256", "kid": "0" * 64, "sig": "AA==", "extra": 1}, "exactly"),
    ({"payload": "e30=", "alg": "RS256", "kid": "0" * 64, "sig": "AA=="}, "alg"),
    ({"payload": "e30=", "alg": "ES256", "kid": "ABC", "sig": "AA=="}, "kid"),
    ({"payload": "e30=", "alg": "ES256", "kid": "A" * 64, "sig": "AA=="}, "lowercase"),
    ({"payload": "!!", "alg": "ES256", "kid": "0" * 64, "sig": "AA=="}, "base64"),
    ({"payload": 5, "alg": "ES256", "kid": "0" * 64, "sig": "AA=="}, "base64 strings"),
])
def test_a_malformed_envelope_is_rule_signature(doc, reason):
    with pytest.raises(InvalidInput, match=reason) as caught:
        signed.parse(json.dumps(doc).encode())
    assert caught.value.rule == "signature"


def test_what_is_not_an_envelope_is_left_to_the_sealer():
    assert signed.parse(b'{"meter_id": "m1", "sig": "label text"}') is None  # no payload member
    assert signed.parse(b"not json \"sig\"") is None
    assert signed.parse(b'["sig"]') is None


def test_a_payload_must_be_one_json_reading():
    envelope = signed.Signed(b"[1, 2]", "Ed25519", "0" * 64, b"")
    with pytest.raises(InvalidInput, match="not a batch"):
        signed.payload_reading(envelope)
    assert signed.parse(signed.encode(envelope)) == envelope
    assert base64.b64decode(json.loads(signed.encode(envelope))["payload"]) == b"[1, 2]"
