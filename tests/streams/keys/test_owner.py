import pytest

from streams.crypto.envelope import DataKey
from streams.exceptions import InvalidEnvelope
from streams.keys.owner import HPKE, RSA, OwnerKeyPair, OwnerPublicKey


@pytest.fixture(scope="module", params=[RSA, HPKE])
def pair(request):
    return OwnerKeyPair.generate(request.param)


def test_wrap_round_trip(pair):
    dek = DataKey.generate()
    wrapped = pair.public_key.wrap(dek)
    assert dek.secret not in wrapped
    assert pair.unwrapper().unwrap(dek.key_id, wrapped).secret == dek.secret


def test_wrapped_key_is_bound_to_its_key_id(pair):
    dek = DataKey.generate()
    wrapped = pair.public_key.wrap(dek)
    with pytest.raises(InvalidEnvelope):
        pair.unwrapper().unwrap(bytes(16), wrapped)


def test_another_owner_cannot_unwrap(pair):
    dek = DataKey.generate()
    wrapped = pair.public_key.wrap(dek)
    with pytest.raises(InvalidEnvelope):
        OwnerKeyPair.generate(pair.scheme).unwrapper().unwrap(dek.key_id, wrapped)


def test_tampered_wrap_fails(pair):
    dek = DataKey.generate()
    wrapped = bytearray(pair.public_key.wrap(dek))
    wrapped[-1] ^= 1
    with pytest.raises(InvalidEnvelope):
        pair.unwrapper().unwrap(dek.key_id, bytes(wrapped))


def test_fingerprints_differ_by_key_and_scheme(pair):
    assert pair.public_key.fingerprint != OwnerKeyPair.generate(pair.scheme).public_key.fingerprint
    assert len(pair.public_key.fingerprint) == 64


def test_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="unknown wrap scheme"):
        OwnerKeyPair.generate("rot13")
    with pytest.raises(ValueError):
        OwnerPublicKey("rot13", b"")
