"""The notifier against real receivers on loopback: grouping timing, HMAC, silences, resolution, a receiver down
then up (delivered once), a hanging or failing webhook, an SMTP server with STARTTLS (and one refusing), a
restart, and a flood."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from streams.notify import silences
from streams.notify.deliver import Deliverer, Smtp
from streams.notify.dispatch import Dispatcher, fingerprint, labels_of
from streams.notify.rules import parse
from streams.notify.state import NotifyState
from streams.store.objects import DirBlobs

from .servers import Hook, Mailbox

T0 = 1_800_000_000.0


def rules_for(hook_url: str, *, mail: bool = False, extra: str = "") -> str:
    return f"""
[global]
resolve_timeout = "10m"

[[receivers]]
name = "ops"
webhook_url = "{hook_url}"
hmac_secret_env = "TEST_HOOK_KEY"

[[receivers]]
name = "mail"
email_to = ["ops@example.org"]

[[routes]]
name = "all"
receiver = "{'mail' if mail else 'ops'}"
group_by = ["region"]
group_wait = "30s"
group_interval = "5m"
repeat_interval = "4h"
{extra}
"""


def alert(n: int, *, region: str = "north", kind: str = "spike", at: float = T0, severity: str = "warning") -> dict:
    return {"format": 1, "alert_id": f"a{n}-{region}-{kind}-{at}", "meter_tok": hashlib.sha256(str(n).encode()).hexdigest()[:32],
            "ts": "2025-03-01T00:00:00+00:00", "kind": kind, "score": 0.99, "severity": severity,
            "reason": "3.1 sd above the meter's usual", "region": region, "kwh": None, "ingested_at_ms": None,
            "detected_at_ms": int(at * 1000)}


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.stop()


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("TEST_HOOK_KEY", "hook-secret")


def make(tmp_path, text, *, blobs=None, **kw):
    state = NotifyState(tmp_path / "notify.sqlite3")
    rules = parse(text)
    blobs = blobs or DirBlobs(tmp_path / "store")
    d = Dispatcher(state, rules, silenced=lambda labels, now: any(s.mutes(labels, now) for s in silences.load_all(blobs)),
                   acked=lambda: set(silences.acknowledged(blobs)), **kw)
    clock = {"now": T0}
    deliver = Deliverer(state, lambda: rules, timeout_s=0.5, clock=lambda: clock["now"], **{
        k: v for k, v in kw.items() if k in ()})
    return d, deliver, clock, blobs


def test_grouping_timing_hmac_and_resolution(tmp_path, hook, env):
    d, deliver, clock, _ = make(tmp_path, rules_for(hook.url))
    assert d.receive([alert(i) for i in range(3)] + [alert(9, region="south")], T0) == 4
    assert d.flush(T0 + 29) == []  # group_wait
    made = d.flush(T0 + 30)
    assert len(made) == 2  # one per region
    clock["now"] = T0 + 30
    assert deliver.run_due() == 2
    north = next(json.loads(r["body"]) for r in hook.accepted if json.loads(r["body"])["groupLabels"] == {"region": "north"})
    assert north["version"] == "4" and north["status"] == "firing" and len(north["alerts"]) == 3
    assert north["receiver"] == "ops" and north["alerts"][0]["labels"]["alertname"] == "MeterAnomaly"
    assert {"kind", "severity", "region", "meter"} <= north["alerts"][0]["labels"].keys()
    for r in hook.accepted:  # the receiver checks the signature with its copy of the key
        want = "sha256=" + hmac.new(b"hook-secret", r["body"], hashlib.sha256).hexdigest()
        assert r["headers"]["X-Meterseal-Signature"] == want
    # a new alert in the north group: not before group_interval after the last notification
    d.receive([alert(3, at=T0 + 60)], T0 + 60)
    assert d.flush(T0 + 60) == [] and d.flush(T0 + 329) == []
    assert len(d.flush(T0 + 330)) == 1
    # a redelivered alert changes nothing
    assert d.receive([alert(3, at=T0 + 60)], T0 + 400) == 0
    # no new occurrence for resolve_timeout: resolved, once
    later = T0 + 60 + 600
    notes = d.flush(later)
    assert len(notes) == 2
    clock["now"] = later
    deliver.run_due()
    resolved = [json.loads(r["body"]) for r in hook.accepted][-2:]
    assert all(n["status"] == "resolved" for n in resolved)
    assert {a["status"] for n in resolved for a in n["alerts"]} == {"resolved"}
    assert d.flush(later + 86_400) == []  # nothing left to say


def test_silence_suppresses_and_a_silence_matching_nothing_is_flagged(tmp_path, hook, env):
    d, deliver, clock, blobs = make(tmp_path, rules_for(hook.url))
    d.receive([alert(1), alert(2, region="south")], T0)
    s = silences.create(blobs, matchers=["region=north"], duration_s=3600, reason="maintenance", created_by="olga",
                        now=T0)
    assert silences.matching(s.matchers, d.active_labels()) == 1
    assert silences.matching(["region=nowhere"], d.active_labels()) == 0  # the CLI and console warn on this
    made = d.flush(T0 + 30)
    assert len(made) == 1
    clock["now"] = T0 + 30
    deliver.run_due()
    assert [json.loads(r["body"])["groupLabels"] for r in hook.accepted] == [{"region": "south"}]
    silences.expire(blobs, s.id, now=T0 + 100)
    d.receive([alert(3)], T0 + 100)
    assert len(d.flush(T0 + 330)) == 1  # the silence ended: north is notified


def test_acknowledged_alerts_are_not_notified_again(tmp_path, hook, env):
    d, deliver, clock, blobs = make(tmp_path, rules_for(hook.url))
    d.receive([alert(1), alert(2)], T0)
    assert len(d.flush(T0 + 30)) == 1
    silences.acknowledge(blobs, fingerprint(labels_of(alert(1))), by="olga", now=T0 + 40)
    # a repeat after repeat_interval lists only the alert nobody acknowledged
    d.receive([alert(1, at=T0 + 14_000), alert(2, at=T0 + 14_000)], T0 + 14_000)
    assert len(d.flush(T0 + 4 * 3600 + 31)) == 1
    clock["now"] = T0 + 4 * 3600 + 31
    deliver.run_due()
    last = json.loads(hook.accepted[-1]["body"])
    assert [a["fingerprint"] for a in last["alerts"]] == [fingerprint(labels_of(alert(2)))]


def test_a_receiver_down_then_up_gets_each_notification_once_and_a_restart_repeats_nothing(tmp_path, hook, env):
    d, deliver, clock, _ = make(tmp_path, rules_for(hook.url))
    d.receive([alert(1)], T0)
    d.flush(T0 + 30)
    hook.status = 500
    clock["now"] = T0 + 30
    assert deliver.run_due() == 0 and deliver.retrying() == 1 and deliver.failed["webhook"] == 1
    clock["now"] = T0 + 31
    assert deliver.run_due() == 0  # backoff: not due yet
    hook.status = 200
    # the worker restarts: a new dispatcher and deliverer over the same state
    d2, deliver2, clock2, _ = make(tmp_path, rules_for(hook.url))
    clock2["now"] = T0 + 60
    assert d2.flush(T0 + 60) == [] and d2.receive([alert(1)], T0 + 60) == 0
    assert deliver2.run_due() == 1 and deliver2.run_due() == 0
    ids = [r["headers"]["X-Meterseal-Notification-Id"] for r in hook.received]
    assert len(hook.accepted) == 1 and len(set(ids)) == 1 and len(ids) == 2  # the 500, then the one delivery


def test_a_hanging_webhook_times_out_and_other_receivers_still_get_theirs(tmp_path, hook, env):
    other = Hook()
    try:
        text = rules_for(hook.url) + f"""
[[receivers]]
name = "second"
webhook_url = "{other.url}"

[[routes]]
name = "critical"
receiver = "second"
matchers = ["severity=critical"]
group_by = ["kind"]
group_wait = "1s"
"""
        text = text.replace('repeat_interval = "4h"\n', 'repeat_interval = "4h"\ncontinue = true\n', 1)
        d, deliver, clock, _ = make(tmp_path, text)
        d.receive([alert(1, severity="critical")], T0)
        assert len(d.flush(T0 + 30)) == 2
        hook.hang = True
        clock["now"] = T0 + 30
        began = time.monotonic()
        assert deliver.run_due() == 1
        assert time.monotonic() - began < 5
        assert len(other.accepted) == 1 and "unreachable" in deliver.last_errors[-1]
        assert deliver.retrying() == 1
    finally:
        hook.hang = False
        other.stop()


def test_email_over_starttls_and_a_refusing_server(tmp_path):
    box = Mailbox(tmp_path)
    try:
        d, _, clock, _ = make(tmp_path, rules_for("http://127.0.0.1:9/unused", mail=True))
        state = d.state
        smtp = Smtp(host="127.0.0.1", port=box.port, sender="meterseal@example.org", ca_file=str(box.ca))
        deliver = Deliverer(state, lambda: d.rules, smtp=smtp, clock=lambda: clock["now"])
        d.receive([alert(1), alert(2)], T0)
        d.flush(T0 + 30)
        box.refuse = True
        clock["now"] = T0 + 30
        assert deliver.run_due() == 0 and "refused" in deliver.last_errors[-1] and deliver.retrying() == 1
        box.refuse = False
        clock["now"] = T0 + 3600
        assert deliver.run_due() == 1
        (sender, to, content), = box.messages
        assert to == ["ops@example.org"] and "[FIRING:2]" in content and "region=north" in content
        no_tls = Deliverer(state, lambda: d.rules, smtp=Smtp(host="127.0.0.1", port=box.port, starttls=False),
                           clock=lambda: clock["now"])
        d.receive([alert(7, region="east")], T0 + 3600)
        d.flush(T0 + 3700)
        clock["now"] = T0 + 3700
        assert no_tls.run_due() == 0  # the server requires STARTTLS: refused, kept for a retry
    finally:
        box.stop()


def test_a_flood_of_100000_alerts_is_bounded_by_grouping(tmp_path, hook, env):
    d, deliver, clock, _ = make(tmp_path, rules_for(hook.url).replace('group_by = ["region"]', 'group_by = ["region", "kind"]'))
    regions, kinds = ["north", "south", "east", "west", "central"], ["spike", "theft", "flatline", "rollback"]
    flood = [alert(i, region=regions[i % 5], kind=kinds[i % 4], at=T0) for i in range(100_000)]
    began = time.perf_counter()
    for k in range(0, len(flood), 5000):
        d.receive(flood[k:k + 5000], T0)
    made = d.flush(T0 + 30)
    took = time.perf_counter() - began
    assert len(made) == 20  # 5 regions x 4 kinds
    clock["now"] = T0 + 30
    assert deliver.run_due() == 20
    bodies = [json.loads(r["body"]) for r in hook.accepted]
    assert all(len(b["alerts"]) == 200 and b["truncatedAlerts"] == 4800 for b in bodies)
    print(f"100,000 alerts grouped into {len(made)} notifications in {took:.1f} s")


def test_a_customer_who_opted_in_gets_email_about_its_own_meter_only(tmp_path):
    from streams.notify import optins
    from streams.notify.service import Notifier
    from streams.store.segments import SegmentStore

    box = Mailbox(tmp_path)
    try:
        store = SegmentStore(tmp_path / "store")
        index_key = bytes(range(32))
        mine, other = alert(1), alert(2)
        optins.opt_in(store.blobs, index_key, mine["meter_tok"], "alice@example.org")
        clock = {"now": T0}
        rules = tmp_path / "rules.toml"
        rules.write_text("")  # no staff routes: only the customer's own opt-in
        n = Notifier(store, index_key, tmp_path / "state.sqlite3", rules_path=str(rules), clock=lambda: clock["now"],
                     smtp=Smtp(host="127.0.0.1", port=box.port, sender="alerts@utility.example", ca_file=str(box.ca)))
        n.take([(0, 0, mine), (0, 1, other)])
        clock["now"] = T0 + 31
        assert n.tick() == 1
        (sender, to, content), = box.messages
        assert to == ["alice@example.org"] and mine["meter_tok"][:12] in content and other["meter_tok"][:12] not in content
    finally:
        box.stop()


def test_an_erased_meter_leaves_the_notifier_and_its_alerts_are_not_taken_again(tmp_path, hook, env):
    from streams.notify.service import Notifier
    from streams.store.segments import SegmentStore

    rules = tmp_path / "rules.toml"
    rules.write_text(rules_for(hook.url).replace('group_by = ["region"]', 'group_by = ["meter"]'))
    store = SegmentStore(tmp_path / "store")
    erased_tokens: set[str] = set()
    n = Notifier(store, bytes(range(32)), tmp_path / "state.sqlite3", rules_path=str(rules), clock=lambda: T0 + 60,
                 erased=lambda tok: tok in erased_tokens)
    gone, kept = alert(1), alert(2)
    n.take([(0, 0, gone), (0, 1, kept)])
    n.tick()
    erased_tokens.add(gone["meter_tok"])
    assert n.forget_erased(lambda tok: tok in erased_tokens) >= 2  # its alert, its group (and its notification)
    dump = "\n".join(str(r) for t in ("alerts", "groups", "outbox") for r in n.state.query(f"SELECT * FROM {t}"))
    assert gone["meter_tok"] not in dump and kept["meter_tok"] in dump
    files = b"".join(p.read_bytes() for p in tmp_path.glob("state.sqlite3*"))  # freed pages and the WAL too
    assert gone["meter_tok"].encode() not in files and kept["meter_tok"].encode() in files
    n.take([(0, 2, {**gone, "alert_id": "later-replay"})])  # the topic replayed: the erased meter's alert stays out
    assert gone["meter_tok"] not in "\n".join(str(r) for r in n.state.query("SELECT * FROM alerts"))
