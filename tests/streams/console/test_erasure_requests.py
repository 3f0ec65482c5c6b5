"""Erasure in the console: a customer asks, an administrator refuses with a reason or approves, the erasure runs,
the customer sees the outcome and a receipt that verifies; every page then forgets the meter, the live alert feed
included."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from streams.console.feed import AlertHub
from streams.erasure.requests import verify_receipt

from .conftest import Served, _Quiet, login, make_state, session_csrf


@pytest.fixture(scope="module")
def served(console_data, tmp_path_factory):
    """Its own copy of the data: an erasure here must not reach the session's shared store."""
    copy = tmp_path_factory.mktemp("erasure-requests") / "data"
    shutil.copytree(console_data["dir"], copy)
    data = {**console_data, "dir": copy, "settings": console_data["settings"].replace(data_dir=copy)}
    hub = AlertHub(_Quiet())
    state = make_state(data, hub=hub, erasure_grace_s=0.0)
    from streams.console.erasure import ErasedMeters

    state.erased = ErasedMeters(state.vault.store)
    hub.hide = state.erased.hide
    hub.state = "connected"
    s = Served(state)
    yield s
    s.stop()


def _alert(n: int, token: str) -> dict:
    return {"alert_id": f"erasure-test-{n}", "meter_tok": token, "kind": "spike",
            "severity": "warning", "region": "north", "reason": "test", "ts": "2024-03-14T10:00:00+00:00",
            "detected_at_ms": int(time.time() * 1000)}


def test_a_customer_asks_an_admin_refuses_then_approves_and_the_meter_is_gone(served):
    state = served.state
    old = state.vault.meter_token("M-ALICE")  # (after the erasure the meter's readings are under the next epoch's)
    state.hub.publish(_alert(1, old))
    alice, bob, root = (login(served.url, name) for name in ("alice", "bob", "root"))
    # alice shared her meter with a party and refused an app before she asked (both must stay hers alone)
    from streams.share.parties import PartyKey, add_party, get_party

    add_party(state.vault.store_dir, "erasure-party", PartyKey.generate().public_key)
    import datetime as dt

    from streams.share.grants import record_denial

    shared = state.sharing.create(party="erasure-party", meter="M-ALICE", start=dt.date(2024, 3, 1),
                                  end=dt.date(2024, 3, 31), purpose="before the erasure")
    refused = record_denial(state.vault.store, signer=state.vault.signer, index_key=state.vault.index_key,
                            party=get_party(state.vault.store, "erasure-party"), meters=["M-ALICE"], scope="FB=4_5_15")
    page = alice.get("/customer", headers={"accept": "text/html"}).text
    assert shared["grant_id"] in page and f"/customer/receipts/{refused['denial_id']}" in page
    assert alice.post("/customer/erasure", data={"csrf_token": session_csrf(alice)}).status_code == 303
    page = alice.get("/customer", headers={"accept": "text/html"}).text
    assert "Erase my data" in page and ">open<" in page
    admin = root.get("/admin", headers={"accept": "text/html"}).text
    request_id = admin.split("/admin/erasure/")[1].split("/")[0]
    csrf = session_csrf(root)
    # a refusal without a reason is not taken; bob cannot see alice's receipt
    assert root.post(f"/admin/erasure/{request_id}/refuse", data={"csrf_token": csrf}).headers["location"].endswith(
        "erasure=needs-reason#erasures")
    assert bob.get(f"/customer/erasure/{request_id}/receipt").status_code == 404
    assert root.post(f"/admin/erasure/{request_id}/approve", data={"csrf_token": csrf}).status_code == 303
    deadline = time.monotonic() + 60
    while True:  # the erasure takes the meter out of alice's account, which ends her sessions: she logs in again
        if alice.get("/customer", headers={"accept": "text/html"}).status_code != 200:
            alice = login(served.url, "alice")
        page = alice.get("/customer", headers={"accept": "text/html"}).text
        if ">erased<" in page:
            break
        assert ">failed<" not in page and time.monotonic() < deadline, page[-3000:]
        time.sleep(0.5)
    assert "M-ALICE" not in state.users.get("alice").meters
    receipt = alice.get(f"/customer/erasure/{request_id}/receipt")
    assert receipt.status_code == 200
    body = verify_receipt(json.loads(receipt.text), state.vault.keystore.ledger_verifiers)
    assert body["status"] == "erased" and body["erasure_id"]
    # the operator's pages never show the erased meter again: not its live alerts, not the alert history
    olga = login(served.url, "olga")
    time.sleep(2.1)  # the console reads the erasure fence again every 2 s
    alerts = olga.get("/api/alerts", headers={"accept": "application/json"}).json()["alerts"]
    assert all(a["meter_tok"] != old for a in alerts)
    state.hub.publish(_alert(2, old))  # the alerts topic replayed
    assert all(a["meter_tok"] != old for a in olga.get("/api/alerts", headers={"accept": "application/json"}).json()["alerts"])
    history = olga.get("/api/alerts/history", headers={"accept": "application/json"}).json()
    assert old not in json.dumps(history) and history  # the fixture's other alert (bob's) is still there
    assert state.vault.meter_token("M-ALICE") != old
    assert state.vault.bills(["M-BOB"])  # bob's data is all there
    # the meter is let to a new customer: nothing alice granted or refused is the newcomer's to see
    state.users.add("newcomer", "customer", password="newcomer-password-1", meters=["M-ALICE"])
    newcomer = login(served.url, "newcomer", "newcomer-password-1")
    page = newcomer.get("/customer", headers={"accept": "text/html"}).text
    assert shared["grant_id"] not in page and refused["denial_id"] not in page and "before the erasure" not in page
    assert newcomer.get(f"/customer/receipts/{refused['denial_id']}").status_code == 404
    assert state.connect.denials(meters=["M-ALICE"]) == [] and state.sharing.of_customer(("M-ALICE",)) == []
    assert [d["denial_id"] for d in state.connect.denials()] == [refused["denial_id"]]  # the operator still has it
