"""Sessions bound to accounts, the stateless login CSRF token, and the throttle's atomic reservations."""

from __future__ import annotations

import asyncio
import threading

import pytest

from streams.console.sessions import LoginCsrf, SessionLimit, SessionStore, current
from streams.console.throttle import PasswordGate, Throttle
from streams.console.users import UserStore

PASSWORD = "p" * 12


def test_sessions_expire_and_are_random():
    now = [0.0]
    store = SessionStore(ttl_s=100, clock=lambda: now[0])
    a, b = store.new("ana", account="x", auth="h"), store.new("ana", account="x", auth="h")
    assert a.id != b.id and a.csrf != b.csrf and len(a.id) >= 43
    now[0] = 99.0
    assert store.get(a.id) is a
    now[0] = 100.0
    assert store.get(a.id) is None and store.get(b.id) is None and len(store) == 0


def test_csrf_compare():
    s = SessionStore().new("ana", account="x", auth="h")
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None) and not s.csrf_ok("") and not s.csrf_ok(s.csrf[:-1] + "x")


def test_no_session_is_evicted_to_make_room():
    store = SessionStore(max_sessions=4, per_address=2)
    kept = [store.new("a", account="1", auth="h", address="10.0.0.1"), store.new("a", account="1", auth="h", address="10.0.0.1"),
            store.new("b", account="2", auth="h", address="10.0.0.2")]
    with pytest.raises(SessionLimit, match="your address"):
        store.new("a", account="1", auth="h", address="10.0.0.1")
    kept.append(store.new("c", account="3", auth="h", address="10.0.0.3"))
    with pytest.raises(SessionLimit, match="as many sessions") as refused:
        store.new("d", account="4", auth="h", address="10.0.0.4")
    assert refused.value.retry_after >= 1 and all(store.get(s.id) is s for s in kept)
    store.drop(kept[0].id)
    assert store.new("d", account="4", auth="h", address="10.0.0.4").user == "d"


def test_a_session_ends_when_its_account_changes(tmp_path):
    users = UserStore(tmp_path / "users.json")
    store = SessionStore()

    def session_of(name):
        user = users.get(name)
        return store.new(name, account=user.account_id, auth=user.auth)

    users.add("ana", "operator", password=PASSWORD)
    changes = [lambda: users.passwd("ana", "q" * 12), lambda: users.set_role("ana", "auditor"),
               lambda: users.end_sessions("ana"), lambda: (users.remove("ana"), users.add("ana", "auditor", password=PASSWORD))]
    for change in changes:
        s = session_of("ana")
        other = users.add("bo", "analyst", password=PASSWORD) and session_of("bo")
        assert current(store, users, s.id)[1].name == "ana"
        change()
        assert current(store, users, s.id) is None and store.get(s.id) is None  # gone, and dropped
        assert current(store, users, other.id)[1].name == "bo"  # other accounts keep theirs
        users.remove("bo")


def test_the_users_file_changed_by_another_process_is_seen(tmp_path):
    """Two stores on one file, as the console and `meterseal console user` in another process are."""
    console, cli = UserStore(tmp_path / "u.json"), UserStore(tmp_path / "u.json")
    cli.add("ana", "operator", password=PASSWORD)
    first = console.get("ana")
    cli.passwd("ana", "q" * 12)
    assert console.get("ana").auth != first.auth and console.get("ana").account_id == first.account_id
    cli.remove("ana")
    cli.add("ana", "operator", password=PASSWORD)
    assert console.get("ana").account_id != first.account_id


def test_login_csrf_is_signed_short_lived_and_bound_to_its_cookie():
    now = [1_000.0]
    csrf = LoginCsrf(ttl_s=60, clock=lambda: now[0])
    cookie, token = csrf.new()
    other_cookie, other_token = csrf.new()
    assert csrf.check(cookie, token) and not csrf.check(cookie, other_token) and not csrf.check(other_cookie, token)
    assert not csrf.check(None, token) and not csrf.check(cookie, None) and not csrf.check(cookie, "1000.00")
    assert not LoginCsrf(clock=lambda: now[0]).check(cookie, token)  # another process's key
    now[0] += 61
    assert not csrf.check(cookie, token)


def test_throttle_reserves_atomically():
    t = Throttle(limit=5, window_s=60, clock=lambda: 0.0)
    tickets, barrier = [], threading.Barrier(20)

    def attempt():
        barrier.wait()
        tickets.append(t.reserve("ana", "a1"))
    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(not x.refused for x in tickets) == 5 and all(x.wait == 60 for x in tickets if x.refused)


def test_throttle_locks_a_name_but_not_for_a_fresh_address():
    now = [0.0]
    t = Throttle(limit=3, window_s=60, address_limit=10, locked_delay_s=2.0, clock=lambda: now[0])
    for _ in range(3):
        t.reserve("ana", "attacker").failed()
    assert t.reserve("ana", "attacker").wait == 60  # the guesser is locked out
    owner = t.reserve("ana", "owner")
    assert not owner.refused and owner.delay == 2.0  # the owner gets in, slowed down
    owner.succeeded()
    fresh = t.reserve("ana", "fresh")
    fresh.failed()
    assert t.reserve("ana", "fresh").refused  # one try per fresh address while the name is locked
    now[0] = 61
    assert t.reserve("ana", "attacker").delay == 0  # the window passed
    for i in range(10):
        t.reserve(f"user{i}", "sprayer").failed()
    assert t.reserve("someone-else", "sprayer").refused  # one address guessing many names


def test_a_cancelled_or_successful_attempt_is_not_a_failure():
    t = Throttle(limit=2, window_s=60, clock=lambda: 0.0)
    for _ in range(5):
        t.reserve("ana", "a1").cancel()
        t.reserve("ana", "a1").succeeded()
    assert t.blocked("ana", "a1") == 0 and not t.reserve("ana", "a1").refused


def test_the_password_gate_bounds_concurrent_checks():
    gate = PasswordGate(2, poll_s=0.001)

    async def check():
        async with gate:
            await asyncio.sleep(0.01)

    async def many():
        await asyncio.gather(*(check() for _ in range(20)))
    runner = threading.Thread(target=asyncio.run, args=(many(),))  # its own thread: Playwright may hold this one's loop
    runner.start()
    runner.join(30)
    assert gate.peak == 2 and gate.running == 0
