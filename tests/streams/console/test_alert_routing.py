"""Alert routing in the console: a customer opts in for its own meter only; the rules editor saves only a valid
file; the history API keeps a customer to its own meters."""

from __future__ import annotations

from streams.notify import optins

from .conftest import login, make_state, session_csrf, Served
from .test_rules_text import RULES


def test_a_customer_opts_in_for_its_own_meter_only(served):
    alice = login(served.url, "alice")
    csrf = session_csrf(alice)
    ok = alice.post("/customer/alerts/email", data={"csrf_token": csrf, "meter": "M-ALICE", "email": "alice@example.org"})
    assert ok.status_code == 303
    vault = served.state.vault
    assert optins.email_for(vault.store.blobs, vault.index_key, vault.meter_token("M-ALICE")) == "alice@example.org"
    other = alice.post("/customer/alerts/email", data={"csrf_token": csrf, "meter": "M-BOB", "email": "alice@example.org"})
    assert other.status_code == 404
    assert optins.email_for(vault.store.blobs, vault.index_key, vault.meter_token("M-BOB")) is None
    assert alice.post("/customer/alerts/email", data={"meter": "M-ALICE", "email": "x@example.org"}).status_code == 403
    mine = alice.get("/api/alerts/history").json()["alerts"]
    assert mine and {a["meter_tok"] for a in mine} == {vault.meter_token("M-ALICE")}
    assert alice.get("/api/alerts/history", params={"meter": "M-BOB"}).status_code == 404
    alice.post("/customer/alerts/email", data={"csrf_token": csrf, "meter": "M-ALICE", "action": "unsubscribe"})
    assert optins.email_for(vault.store.blobs, vault.index_key, vault.meter_token("M-ALICE")) is None


def test_the_rules_editor_saves_only_a_valid_file(console_data, tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    s = Served(make_state(console_data, alert_rules=str(path)))
    try:
        root = login(s.url, "root")
        csrf = session_csrf(root)
        assert "ops-hook" in root.get("/admin/alert-rules").text
        bad = root.post("/admin/alert-rules", data={"csrf_token": csrf, "text": RULES.replace('"30s"', '"soon"')})
        assert bad.status_code == 400 and "line 8" in bad.text and "not a duration" in bad.text
        assert path.read_text() == RULES  # the rules in force are unchanged
        good = root.post("/admin/alert-rules", data={"csrf_token": csrf, "text": RULES.replace('"30s"', '"45s"')})
        assert good.status_code == 200 and '"45s"' in path.read_text()
    finally:
        s.stop()
