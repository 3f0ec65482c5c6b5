"""The customer's page and API show which readings their meter signed, and give the proof from the device."""

from __future__ import annotations

from ledger.note import Verifier

from streams.devices.proof import check_device_proof

from .conftest import login


def test_alice_downloads_the_proof_from_her_meter_and_a_third_party_checks_it(served, console_data):
    alice = login(served.url, "alice")
    page = alice.get("/customer").text
    assert "Signed by my meter" in page and "signed by device key" in page and "device proof" in page
    latest = served.state.vault.recent_readings(["M-ALICE"])[0]
    assert latest["device_signed"] and latest["device_kid"] == console_data["device"].public_key.kid
    r = alice.get(f"/api/ledger/proof/{latest['record_id']}?device=1&download=1")
    assert r.status_code == 200 and 'filename="device-proof-' in r.headers["content-disposition"]
    vkey = served.state.vault.keystore.ledger_verifier.vkey  # the one a third party trusts, not the proof's copy
    got = check_device_proof(r.json(), verifiers=[Verifier.from_vkey(vkey)],
                             device_key=console_data["device"].public_key)
    assert (got["meter_id"], got["ts"], got["kwh"]) == ("M-ALICE", latest["ts"], latest["kwh"])


def test_bob_sees_his_readings_marked_not_device_signed_and_cannot_reach_alices(served):
    bob = login(served.url, "bob")
    page = bob.get("/customer").text
    assert "not device-signed" in page and "signed by device key" not in page
    mine = served.state.vault.recent_readings(["M-BOB"])[0]
    r = bob.get(f"/api/ledger/proof/{mine['record_id']}?device=1")
    assert r.status_code == 400 and "not device-signed" in r.text
    readings = bob.get(f"/api/meters/M-BOB/readings?from={mine['ts'][:10]}&to={mine['ts'][:10]}").json()["readings"]
    assert readings and not any(x["device_signed"] for x in readings)
    alices = served.state.vault.recent_readings(["M-ALICE"])[0]["record_id"]
    assert bob.get(f"/api/ledger/proof/{alices}?device=1").status_code == 404
