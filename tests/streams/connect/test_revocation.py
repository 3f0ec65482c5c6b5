"""Revocation from each side — the customer (console), the third party (DELETE Authorization), the operator
(`meterseal grant revoke`) — then 401 on the next call, a signed BatchList at the party's loopback receiver,
and receipts that verify against the ledger. Also: an unreachable notify-uri, erasure, new-data notices."""

from __future__ import annotations

import time

import httpx
import pytest
from click.testing import CliRunner

from ledger.note import Verifier
from streams.connect.notify import Outbox, new_data_due, verify_signature
from streams.connect.receipts import verify_receipt
from tests.streams.console.conftest import PASSPHRASE, login, session_csrf

from .conftest import SCOPE
from .flow import espi_get, new_tokens

ESPI = "/espi/1_1/resource"


def _published(base: str) -> list[Verifier]:
    doc = httpx.get(f"{base}/.well-known/meterseal-vkeys").json()
    return [Verifier.from_vkey(v) for v in doc["vkeys"]]


def _check_revoked(served, receiver, tokens: dict, receipts: list[dict]) -> None:
    base = served.url
    grant_id = tokens["resourceURI"].rsplit("/", 1)[1]
    sub = ESPI + tokens["resourceURI"].split(ESPI, 1)[1]
    assert espi_get(base, sub, tokens["access_token"]).status_code == 401
    refresh = httpx.post(f"{base}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                         auth=(served.party["client_id"], served.party["secret"]))
    assert refresh.json()["error"] == "invalid_grant"
    auth = espi_get(base, ESPI + f"/Authorization/{grant_id}", tokens["access_token"])  # status 0, kept, never deleted
    assert auth.status_code == 200 and b"<espi:status>0</espi:status>" in auth.content
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not [b for b, _ in receiver.got if grant_id.encode() in b]:
        time.sleep(0.05)
    notices = [(b, sig) for b, sig in receiver.got if grant_id.encode() in b]
    assert notices, "no BatchList reached the notify-uri"
    body, signature = notices[0]
    assert b"<espi:BatchList" in body and f"{ESPI}/Authorization/{grant_id}".encode() in body
    vkeys = _published(base)
    assert verify_signature(body, signature, vkeys)
    assert not verify_signature(body + b" ", signature, vkeys)
    kinds = [r["meterseal"]["event"] for r in receipts]
    assert kinds == ["consent", "revocation"] and receipts[1]["endsReceipt"] == receipts[0]["consentReceiptID"]
    for r in receipts:
        assert verify_receipt(r, vkeys)
        assert r["version"] == "KI-CR-v1.1.0" and r["piiPrincipalId"] and "M-A1" not in str(r)


@pytest.fixture
def served(served_connect, party):
    served_connect.party = party
    return served_connect


def test_the_customer_revokes_in_the_console(served, party, receiver):
    base = served.url
    tokens = new_tokens(base, party, meters=["M-A1"])
    grant_id = tokens["resourceURI"].rsplit("/", 1)[1]
    alice = login(base, "alice")
    page = alice.get("/customer", headers={"accept": "text/html"})
    assert f"/customer/receipts/{grant_id}" in page.text and "Apps connected to my data" in page.text
    assert login(base, "bob").get(f"/customer/receipts/{grant_id}").status_code == 404  # not bob's
    r = alice.post(f"/customer/connect/{grant_id}/revoke", data={"csrf_token": session_csrf(alice)})
    assert r.status_code == 303
    receipts = alice.get(f"/customer/receipts/{grant_id}").json()
    _check_revoked(served, receiver, tokens, receipts)


def test_the_third_party_deletes_its_authorization(served, party, receiver):
    base = served.url
    tokens = new_tokens(base, party, meters=["M-A1"])
    grant_id = tokens["resourceURI"].rsplit("/", 1)[1]
    other = new_tokens(base, party, customer="bob")
    assert httpx.delete(f"{base}{ESPI}/Authorization/{grant_id}",
                        headers={"Authorization": f"Bearer {other['access_token']}"}).status_code == 403
    r = httpx.delete(f"{base}{ESPI}/Authorization/{grant_id}", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status_code == 200
    _check_revoked(served, receiver, tokens, served.state.connect.receipts(served.state.connect.grant(grant_id)))
    assert served.state.connect.grant(grant_id).revoke_reason == "revoked by the third party"


def test_the_operator_revokes_with_the_cli(served, party, receiver, connect_data, monkeypatch):
    import json

    from streams.cli.main import main

    base = served.url
    tokens = new_tokens(base, party, meters=["M-A1"])
    grant_id = tokens["resourceURI"].rsplit("/", 1)[1]
    monkeypatch.setenv("METERSEAL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("METERSEAL_CONNECT_PUBLIC_URL", base)
    runner = CliRunner()
    listed = runner.invoke(main, ["--data-dir", str(connect_data["dir"]), "grant", "list", "--format", "json"])
    assert listed.exit_code == 0 and party["client_id"] in listed.output
    done = runner.invoke(main, ["--data-dir", str(connect_data["dir"]), "grant", "revoke", grant_id])
    assert done.exit_code == 0, done.output
    receipt = runner.invoke(main, ["--data-dir", str(connect_data["dir"]), "grant", "receipt", grant_id,
                                   "--format", "json"])
    assert receipt.exit_code == 0, receipt.output
    _check_revoked(served, receiver, tokens, json.loads(receipt.output[receipt.output.index("["):]))


def test_an_unreachable_notify_uri_is_retried_and_never_blocks(served_connect, tmp_path):
    from ledger.note import Signer
    from streams.ingest.broker import free_port

    now = [1000.0]
    outbox = Outbox(tmp_path / "outbox", Signer.generate("test"), base_s=30, timeout_s=1, clock=lambda: now[0])
    outbox.enqueue(f"http://127.0.0.1:{free_port()}/closed", b"<BatchList/>", what="test")  # returns at once
    assert outbox.run_due() == 0
    job, = outbox.pending()
    assert job["attempts"] == 1 and job["next_at"] == 1030 and job["last_error"]
    now[0] = 1031
    outbox.run_due()
    assert outbox.pending()[0]["next_at"] == 1031 + 60  # backoff doubles
    now[0] = 1000 + 24 * 3600 + 1
    outbox.run_due()
    assert outbox.pending() == [] and len(outbox.failed()) == 1


def test_a_revocation_with_an_unreachable_receiver_returns_and_queues(served_connect):
    from streams.ingest.broker import free_port

    connect = served_connect.state.connect
    client, secret = connect.register("offline-app", redirect_uri="https://offline.example/cb", scope=SCOPE,
                                      notify_uri=f"http://127.0.0.1:{free_port()}/gone")
    offline = {"name": "offline-app", "client_id": client.client_id, "secret": secret,
               "redirect_uri": "https://offline.example/cb"}
    tokens = new_tokens(served_connect.url, offline, meters=["M-A1"])
    grant_id = tokens["resourceURI"].rsplit("/", 1)[1]
    connect.revoke(grant_id, by="customer")
    assert any(grant_id in job["what"] for job in connect.outbox.pending())
    assert espi_get(served_connect.url, ESPI + "/ReadServiceStatus", tokens["access_token"]).status_code == 401


def test_erasure_revokes_the_subjects_authorizations_once(served_connect, party):
    from streams import capabilities
    from streams.registry import ErasureContext, Subject

    connect = served_connect.state.connect
    tokens = new_tokens(served_connect.url, party, customer="bob")
    grant_id = tokens["resourceURI"].rsplit("/", 1)[1]
    holder = next(h for h in capabilities.registry().holders if h.name == "connect-authorizations")
    vault = served_connect.state.vault
    context = ErasureContext(vault.store, vault.data_dir, vault.index_key, vault.signer, erasure_id="e1")
    subject = Subject("meter", "M-B1", meters=("M-B1",))
    assert holder.erase(context, subject) >= 2  # the grant and its tokens
    assert connect.grant(grant_id).state == "revoked" and holder.erase(context, subject) == 0


def test_new_data_is_notified_at_most_once_per_block_duration():
    class G:
        def __init__(self, gid: str) -> None:
            self.grant_id = gid

    grants, last = [G("a"), G("b")], {"b": 950.0}
    due = new_data_due(grants, block_s=lambda g: 86400, latest=lambda g: 990.0, last_sent=last, now=1000.0)
    assert [g.grant_id for g in due] == ["a"]  # b was told 50 s ago: not again within a day
    assert new_data_due(grants, block_s=lambda g: 86400, latest=lambda g: None, last_sent={}, now=1000.0) == []


def test_an_expired_authorization_answers_401_and_gets_an_expiry_receipt(served_connect, party):
    from streams.connect.service import Connect, Refused

    live = served_connect.state.connect
    tokens = new_tokens(served_connect.url, party, meters=["M-A1"])
    grant_id = tokens["resourceURI"].rsplit("/", 1)[1]
    later = Connect(live.store, live.data_dir, signer=live.signer, index_key=live.index_key,
                    meter_token=live.meter_token, clock=lambda: time.time() + 366 * 86400)  # past the 365-day consent
    with pytest.raises(Refused) as refused:
        later.access(f"Bearer {tokens['access_token']}")
    assert refused.value.status == 401
    receipts = later.receipts(later.grant(grant_id))
    assert [r["meterseal"]["event"] for r in receipts] == ["consent", "expiry"]
    assert receipts[1]["endsReceipt"] == receipts[0]["consentReceiptID"]
    assert verify_receipt(receipts[1], [served_connect.state.vault.keystore.ledger_verifier])
