"""Per-record keys and envelope version 2: known answers with pinned nonces, commitment, fail-closed opening."""

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings, strategies as st

from streams.crypto.record_keys import COMMITMENT_LABEL, RECORD_KEY_LABEL, commitment, commits_to, record_key
from streams.crypto.envelope import (HEADER_LEN_2, OVERHEAD_2, DataKey, DekRing, commitment_of, key_id_of, open_with,
                              open_with_record_key, seal, seal_record, version_of)
from streams.exceptions import InvalidEnvelope

DEK = DataKey(bytes(range(16)), bytes(range(32, 64)))
KEYS = {DEK.key_id: DEK}
RID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
NONCE = bytes(range(100, 112))

# pinned known answers (computed once from the spec; the tests below also rebuild them from first principles)
RECORD_KEY_HEX = "d51b2f885c034df9e6acacabcb4bf8cef4b54de72176ae745a5a7a539f6ce54d"
COMMITMENT_HEX = "6c22671fae2b0c770c38ca7f8609b59453204382be4cee5e72831268ff56934b"
ENVELOPE_HEX = ("02000102030405060708090a0b0c0d0e0f6c22671fae2b0c770c38ca7f8609b59453204382be4cee5e72831268ff56934b64"
                "65666768696a6b6c6d6e6f0f5b036639963e71f51679e553ee07efa56c491ea65f10")


def test_labels_are_the_spec():
    assert RECORD_KEY_LABEL == b"meterseal record key v2\x00"
    assert COMMITMENT_LABEL == b"meterseal key commitment v2"


def test_record_key_and_commitment_from_first_principles():
    rk = hmac.new(DEK.secret, b"meterseal record key v2\x00" + RID.encode(), hashlib.sha256).digest()
    assert record_key(DEK.secret, RID) == rk
    assert commitment(rk) == hmac.new(rk, b"meterseal key commitment v2", hashlib.sha256).digest()
    assert len(commitment(rk)) == 32


def test_known_answer_vectors():
    rk = record_key(DEK.secret, RID)
    assert rk.hex() == RECORD_KEY_HEX
    assert commitment(rk).hex() == COMMITMENT_HEX
    assert seal_record(DEK, RID, b"4.2 kWh", aad=b"row", nonce=NONCE).hex() == ENVELOPE_HEX


def test_envelope_v2_layout_against_aesgcm_directly():
    rk = record_key(DEK.secret, RID)
    box = seal_record(DEK, RID, b"4.2 kWh", aad=b"row", nonce=NONCE)
    header = b"\x02" + DEK.key_id + commitment(rk)
    assert box == header + NONCE + AESGCM(rk).encrypt(NONCE, b"4.2 kWh", header + b"row")
    assert len(box) == OVERHEAD_2 + 7 and len(header) == HEADER_LEN_2
    assert version_of(box) == 2 and key_id_of(box) == DEK.key_id and commitment_of(box) == commitment(rk)


def test_dek_ring_writes_the_same_envelope_as_seal_record():
    made = []
    ring = DekRing(max_records=10, max_age_s=3600, on_new_key=made.append, clock=lambda: 0.0)
    box = ring.seal(b"x", aad=b"a", record_id=RID)
    assert version_of(box) == 2
    dek = made[0]
    rk = record_key(dek.secret, RID)
    assert commitment_of(box) == commitment(rk)
    assert open_with({dek.key_id: dek}, box, aad=b"a", record_id=RID) == b"x"
    assert open_with_record_key(rk, box, aad=b"a") == b"x"
    assert version_of(ring.seal(b"dead letter", aad=b"d")) == 1  # no record id: version 1, as before


def test_owner_and_recipient_open():
    box = seal_record(DEK, RID, b"reading", aad=b"ctx")
    assert open_with(KEYS, box, aad=b"ctx", record_id=RID) == b"reading"
    assert open_with_record_key(record_key(DEK.secret, RID), box, aad=b"ctx") == b"reading"


def test_version_1_still_opens():
    box = seal(DEK, b"old", aad=b"ctx")
    assert version_of(box) == 1
    assert open_with(KEYS, box, aad=b"ctx") == b"old"
    assert open_with(KEYS, box, aad=b"ctx", record_id=RID) == b"old"
    with pytest.raises(InvalidEnvelope):  # a recipient's record key never opens a v1 envelope
        open_with_record_key(record_key(DEK.secret, RID), box, aad=b"ctx")


@pytest.mark.parametrize("case", ["no-record-id", "wrong-record-id", "wrong-aad", "wrong-dek", "unknown-dek"])
def test_owner_open_fails_closed(case):
    box = seal_record(DEK, RID, b"x", aad=b"a")
    keys, aad, rid = KEYS, b"a", RID
    if case == "no-record-id":
        rid = None
    elif case == "wrong-record-id":
        rid = RID[:-1] + "1"
    elif case == "wrong-aad":
        aad = b"b"
    elif case == "wrong-dek":
        keys = {DEK.key_id: DataKey(DEK.key_id, bytes(32))}
    else:
        keys = {}
    with pytest.raises(InvalidEnvelope):
        open_with(keys, box, aad=aad, record_id=rid)


def test_recipient_key_of_another_record_fails_at_the_commitment():
    box = seal_record(DEK, RID, b"x", aad=b"a")
    for key in (record_key(DEK.secret, "other"), bytes(32), b"short"):
        with pytest.raises(InvalidEnvelope):
            open_with_record_key(key, box, aad=b"a")


def test_forged_commitment_fails_even_with_the_right_key():
    """The commitment is in the associated data: replacing it (to match another key) breaks the tag."""
    rk, other = record_key(DEK.secret, RID), record_key(DEK.secret, "other")
    box = bytearray(seal_record(DEK, RID, b"x", aad=b"a"))
    box[17:49] = commitment(other)
    with pytest.raises(InvalidEnvelope):
        open_with_record_key(other, bytes(box), aad=b"a")
    with pytest.raises(InvalidEnvelope):
        open_with_record_key(rk, bytes(box), aad=b"a")


def test_commits_to_is_exact():
    rk = record_key(DEK.secret, RID)
    assert commits_to(rk, commitment(rk))
    assert not commits_to(rk, bytes(32))
    assert not commits_to(rk[:31], commitment(rk))


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=0, max_size=48), st.data())
def test_any_single_bit_flip_fails_for_owner_and_recipient(plaintext, data):
    rk = record_key(DEK.secret, RID)
    box = bytearray(seal_record(DEK, RID, plaintext, aad=b"aad"))
    bit = data.draw(st.integers(0, len(box) * 8 - 1))
    box[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidEnvelope):
        open_with(KEYS, bytes(box), aad=b"aad", record_id=RID)
    with pytest.raises(InvalidEnvelope):
        open_with_record_key(rk, bytes(box), aad=b"aad")


def test_truncated_v2_envelopes_fail():
    box = seal_record(DEK, RID, b"abc", aad=b"")
    for cut in range(len(box)):
        with pytest.raises(InvalidEnvelope):
            open_with(KEYS, box[:cut], aad=b"", record_id=RID)
        with pytest.raises(InvalidEnvelope):
            open_with_record_key(record_key(DEK.secret, RID), box[:cut], aad=b"")
