import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings, strategies as st

from streams.crypto.envelope import OVERHEAD, DataKey, DekRing, key_id_of, open_with, seal
from streams.exceptions import InvalidEnvelope

DEK = DataKey(bytes(range(16)), bytes(range(32, 64)))
OTHER = DataKey(bytes(range(16)), bytes(32))  # same id, wrong secret
KEYS = {DEK.key_id: DEK}


def test_round_trip_and_layout():
    box = seal(DEK, b"reading", aad=b"ctx")
    assert len(box) == OVERHEAD + len(b"reading")
    assert box[0] == 1 and key_id_of(box) == DEK.key_id
    assert open_with(KEYS, box, aad=b"ctx") == b"reading"


def test_known_answer_against_aesgcm_directly():
    """With a pinned nonce the envelope is exactly header || nonce || AES-GCM(header || aad)."""
    nonce = bytes(12)
    box = seal(DEK, b"4.2", aad=b"a", nonce=nonce)
    header = b"\x01" + DEK.key_id
    assert box == header + nonce + AESGCM(DEK.secret).encrypt(nonce, b"4.2", header + b"a")


def test_random_nonces_make_every_envelope_distinct():
    assert len({seal(DEK, b"same", aad=b"") for _ in range(100)}) == 100


def test_swapped_aad_fails_closed():
    box = seal(DEK, b"x", aad=b"meter-1|2024-01-01")
    with pytest.raises(InvalidEnvelope):
        open_with(KEYS, box, aad=b"meter-2|2024-01-01")


def test_wrong_key_and_unknown_key_fail_closed():
    box = seal(DEK, b"x", aad=b"")
    with pytest.raises(InvalidEnvelope):
        open_with({OTHER.key_id: OTHER}, box, aad=b"")
    with pytest.raises(InvalidEnvelope):
        open_with({}, box, aad=b"")
    with pytest.raises(InvalidEnvelope):
        open_with(lambda key_id: (_ for _ in ()).throw(KeyError(key_id)), box, aad=b"")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=64), st.data())
def test_any_single_bit_flip_fails(plaintext, data):
    box = bytearray(seal(DEK, plaintext, aad=b"aad"))
    bit = data.draw(st.integers(0, len(box) * 8 - 1))
    box[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(InvalidEnvelope):
        open_with(KEYS, bytes(box), aad=b"aad")


def test_truncated_envelopes_fail():
    box = seal(DEK, b"abc", aad=b"")
    for cut in range(len(box)):
        with pytest.raises(InvalidEnvelope):
            open_with(KEYS, box[:cut], aad=b"")


def test_key_material_is_checked_when_built():
    with pytest.raises(ValueError):
        DataKey(b"short", bytes(32))
    with pytest.raises(ValueError):
        DataKey(bytes(16), bytes(16))
    assert "secret" not in repr(DEK) or DEK.secret.hex() not in repr(DEK)


def test_dek_rotates_by_count():
    made = []
    ring = DekRing(max_records=3, max_age_s=1e9, on_new_key=made.append, clock=lambda: 0.0)
    ids = [key_id_of(ring.seal(b"x", aad=b"")) for _ in range(7)]
    assert [ids.count(k.key_id) for k in made] == [3, 3, 1]


def test_dek_rotates_by_age():
    now = [0.0]
    made = []
    ring = DekRing(max_records=10**6, max_age_s=60, on_new_key=made.append, clock=lambda: now[0])
    first = key_id_of(ring.seal(b"x", aad=b""))
    now[0] = 59.9
    assert key_id_of(ring.seal(b"x", aad=b"")) == first
    now[0] = 60.0
    assert key_id_of(ring.seal(b"x", aad=b"")) != first
    assert len(made) == 2


def test_new_key_is_announced_before_it_seals_anything():
    order = []
    ring = DekRing(max_records=1, max_age_s=60, on_new_key=lambda k: order.append(("key", k.key_id)))
    box = ring.seal(b"x", aad=b"")
    order.append(("box", key_id_of(box)))
    assert order[0] == ("key", order[1][1])


def test_ring_envelopes_open_with_the_announced_key():
    made = []
    ring = DekRing(max_records=2, max_age_s=60, on_new_key=made.append)
    boxes = [ring.seal(str(i).encode(), aad=b"r") for i in range(5)]
    keys = {k.key_id: k for k in made}
    assert [open_with(keys, b, aad=b"r") for b in boxes] == [str(i).encode() for i in range(5)]


def test_fixed_key_envelopes_are_version_1_envelopes_both_ways():
    """State sealed before (``seal``) opens with ``FixedKey`` and the other way round; anything else fails
    with the one exception."""
    from streams.crypto.envelope import FixedKey

    dek, other = DataKey.generate(now=0.0), DataKey.generate(now=0.0)
    fixed = FixedKey(dek)
    assert fixed.open(seal(dek, b"old state", aad=b"m1"), aad=b"m1") == b"old state"
    assert open_with({dek.key_id: dek}, fixed.seal(b"new state", aad=b"m1"), aad=b"m1") == b"new state"
    box = fixed.seal(b"s", aad=b"m1")
    for bad, aad in [(box, b"m2"), (box[:-1] + bytes([box[-1] ^ 1]), b"m1"), (seal(other, b"s", aad=b"m1"), b"m1"),
                     (box[:20], b"m1"), (b"\x02" + box[1:], b"m1")]:
        with pytest.raises(InvalidEnvelope):
            fixed.open(bad, aad=aad)
