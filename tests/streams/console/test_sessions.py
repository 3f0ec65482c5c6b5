from __future__ import annotations

from streams.console.sessions import SessionStore, Throttle


def test_sessions_expire_and_are_random():
    now = [0.0]
    store = SessionStore(ttl_s=100, clock=lambda: now[0])
    a, b = store.new("ana"), store.new("ana")
    assert a.id != b.id and a.csrf != b.csrf and len(a.id) >= 43
    now[0] = 99.0
    assert store.get(a.id) is a
    now[0] = 100.0
    assert store.get(a.id) is None and store.get(b.id) is None
    anon = store.new(None)
    assert anon.expires - now[0] <= 100


def test_csrf_compare():
    s = SessionStore().new("ana")
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None) and not s.csrf_ok("") and not s.csrf_ok(s.csrf[:-1] + "x")


def test_throttle_blocks_then_releases():
    now = [0.0]
    t = Throttle(limit=3, window_s=60, address_limit=10, clock=lambda: now[0])
    for _ in range(3):
        assert t.blocked("ana", "a1") == 0
        t.failed("ana", "a1")
    assert t.blocked("ana", "a2") == 60  # the name is throttled from any address
    now[0] = 61
    assert t.blocked("ana", "a1") == 0
    for i in range(10):
        t.failed(f"user{i}", "a9")
    assert t.blocked("someone-else", "a9") > 0  # one address guessing many names is throttled too
