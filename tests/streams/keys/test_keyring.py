"""The reader's keyring: DEKs from the store, a newer wrap first, cached with a bound and a TTL, dropped when
the key service refuses."""

from __future__ import annotations

import pytest

from streams.crypto.envelope import DataKey
from streams.exceptions import KeyServiceDenied
from streams.keys.keyring import Keyring, current_wrap, put_wrap
from streams.keys.owner import OwnerKeyPair
from streams.store.segments import SegmentStore


class Counting:
    """An ``unwrap_dek`` that opens with one owner key and counts its calls (a key service's stand-in: the
    contract suite runs the real ones)."""

    def __init__(self, pair: OwnerKeyPair) -> None:
        self.unwrapper, self.calls, self.refuse = pair.unwrapper(), 0, False

    def unwrap_dek(self, record):
        if self.refuse:
            raise KeyServiceDenied("refused: the token was revoked")
        self.calls += 1
        return self.unwrapper.unwrap(bytes.fromhex(record["key_id"]), record["wrapped"])


@pytest.fixture(scope="module")
def pair():
    return OwnerKeyPair.generate()


def stored(store, pair, n=3):
    deks = []
    for _ in range(n):
        dek = DataKey.generate(now=0.0)
        store.put_dek({"key_id": dek.key_hex, "scheme": pair.scheme, "owner_fingerprint": pair.public_key.fingerprint,
                       "wrapped": pair.public_key.wrap(dek), "created_at_ms": 0, "worker": "t"})
        deks.append(dek)
    return deks


def test_cached_for_the_ttl_then_asked_again(tmp_path, pair):
    store, now = SegmentStore(tmp_path), [0.0]
    deks = stored(store, pair)
    service = Counting(pair)
    ring = Keyring(store, service, ttl_s=60, clock=lambda: now[0])
    assert ring(deks[0].key_id).secret == deks[0].secret
    assert ring(deks[0].key_id).secret == deks[0].secret
    assert service.calls == 1
    now[0] = 61.0
    ring(deks[0].key_id)
    assert service.calls == 2  # the TTL passed: the service is asked again


def test_bounded_least_recently_used_out_first(tmp_path, pair):
    store = SegmentStore(tmp_path)
    a, b, c = stored(store, pair)
    service = Counting(pair)
    ring = Keyring(store, service, max_keys=2)
    ring(a.key_id), ring(b.key_id), ring(a.key_id), ring(c.key_id)  # b is the least recently used
    assert len(ring) == 2 and service.calls == 3
    ring(a.key_id)
    assert service.calls == 3  # a stayed
    ring(b.key_id)
    assert service.calls == 4  # b had gone


def test_a_refusal_drops_every_cached_key(tmp_path, pair):
    store = SegmentStore(tmp_path)
    a, b = stored(store, pair, 2)
    service = Counting(pair)
    ring = Keyring(store, service)
    ring(a.key_id)
    service.refuse = True
    with pytest.raises(KeyServiceDenied):
        ring(b.key_id)
    assert len(ring) == 0
    with pytest.raises(KeyServiceDenied):
        ring(a.key_id)  # cached a moment ago, gone now: fail closed


def test_a_newer_wrap_is_read_first_and_the_creation_record_stays(tmp_path, pair):
    store = SegmentStore(tmp_path)
    (dek,) = stored(store, pair, 1)
    original = store.get_dek(dek.key_hex)
    newer = OwnerKeyPair.generate()
    put_wrap(store, {**original, "owner_fingerprint": newer.public_key.fingerprint, "wrapped": newer.public_key.wrap(dek)})
    assert current_wrap(store, dek.key_hex)["owner_fingerprint"] == newer.public_key.fingerprint
    assert store.get_dek(dek.key_hex) == original  # the key log's record of its creation is untouched
    assert Keyring(store, Counting(newer))(dek.key_id).secret == dek.secret
    with pytest.raises(KeyError):
        Keyring(store, Counting(newer))(bytes(16))  # no such DEK


def test_legacy_unwrapper_maps_still_work(tmp_path, pair):
    store = SegmentStore(tmp_path)
    (dek,) = stored(store, pair, 1)
    assert Keyring(store, {pair.public_key.fingerprint: pair.unwrapper()})(dek.key_id).secret == dek.secret
    with pytest.raises(ValueError):
        Keyring(store, {}, ttl_s=0)


def test_subject_keys_are_cached_for_the_ttl_so_a_destroyed_one_leaves_memory(tmp_path, pair):
    from streams.keys.subjects import SubjectKeyTable

    index_key, store, now = bytes(range(32)), SegmentStore(tmp_path), [0.0]
    key, _ = SubjectKeyTable(store, index_key).create("tok-a", "account")
    ring = Keyring(store, Counting(pair), index_key=index_key, ttl_s=60, clock=lambda: now[0])
    assert ring.subject_key("tok-a", key.key_id) == key
    SubjectKeyTable(store, index_key).destroy("tok-a")  # an erasure elsewhere destroyed it
    now[0] = 59.0
    assert ring.subject_key("tok-a", key.key_id) == key  # still within its TTL here
    now[0] = 61.0
    with pytest.raises(KeyError):
        ring.subject_key("tok-a", key.key_id)  # gone from the store, and now from this process too
    other, _ = SubjectKeyTable(store, index_key).create("tok-b", "account")
    ring.subject_key("tok-b", other.key_id)
    ring.forget()  # a refusal by the key service drops subject keys too
    SubjectKeyTable(store, index_key).destroy("tok-b")
    with pytest.raises(KeyError):
        ring.subject_key("tok-b", other.key_id)


def test_subject_keys_are_bounded_like_deks(tmp_path, pair):
    from streams.keys.subjects import SubjectKeyTable

    index_key, store = bytes(range(32)), SegmentStore(tmp_path)
    table = SubjectKeyTable(store, index_key)
    keys = {t: table.create(t, "account")[0] for t in ("a", "b", "c")}
    ring = Keyring(store, Counting(pair), index_key=index_key, max_keys=2)
    for t in ("a", "b", "c"):
        ring.subject_key(t, keys[t].key_id)
    table.destroy("a")  # least recently used: evicted, so it is read again, and it is gone
    with pytest.raises(KeyError):
        ring.subject_key("a", keys["a"].key_id)
    table.destroy("c")
    assert ring.subject_key("c", keys["c"].key_id) == keys["c"]  # still cached
