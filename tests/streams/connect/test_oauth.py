"""The authorization server: consent, codes, PKCE, tokens, refresh rotation, revocation, and every attack the
issue lists — against a console served on a free port (real HTTP, real store, real ledger)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from click.testing import CliRunner

from ledger.note import Verifier
from streams.cli.main import main
from streams.connect.receipts import verify_receipt
from streams.exceptions import ShareError
from streams.share.grants import consent_events, list_grants

from .conftest import SCOPE
from .flow import authorize_url, code_of, consent, espi_get, exchange, new_tokens, pkce
from tests.streams.console.conftest import PASSPHRASE, login


def test_approve_gives_a_code_and_tokens_with_espi_uris_and_a_grant_with_client_id(served_connect, party):
    base, connect = served_connect.url, served_connect.state.connect
    verifier, challenge = pkce()
    code = code_of(consent(base, "alice", authorize_url(party, challenge), meters=["M-A1"]))
    answer = exchange(base, party, code, verifier, basic=False)  # client_secret_post
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer" and 0 < tokens["expires_in"] <= 3600 and tokens["scope"] == SCOPE
    grant_id = tokens["resourceURI"].rsplit("/", 1)[1]
    assert tokens["resourceURI"] == f"{base}/espi/1_1/resource/Batch/Subscription/{grant_id}"
    assert tokens["authorizationURI"] == f"{base}/espi/1_1/resource/Authorization/{grant_id}"
    grant = next(g for g in list_grants(connect.store, index_key=connect.index_key) if g.grant_id == grant_id)
    assert grant.client_id == party["client_id"] and grant.meters == ("M-A1",) and grant.scope == SCOPE
    # nothing secret is stored in clear
    raw = connect.tokens.path.read_bytes() + b"".join(
        p.read_bytes() for p in connect.tokens.path.parent.glob("oauth.sqlite*"))
    assert tokens["access_token"].encode() not in raw and tokens["refresh_token"].encode() not in raw
    assert party["secret"].encode() not in b"".join(p.read_bytes() for p in
                                                    (connect.data_dir / "store" / "connect").rglob("*") if p.is_file())


def test_anonymous_visitor_logs_in_and_comes_back_to_the_consent_page(served_connect, party):
    client = httpx.Client(base_url=served_connect.url, follow_redirects=False, timeout=30)
    _, challenge = pkce()
    url = authorize_url(party, challenge)
    first = client.get(url, headers={"accept": "text/html"})
    assert first.status_code == 303 and first.headers["location"].startswith("/login?next=")
    from tests.streams.console.conftest import PASSWORD, csrf_of

    form = client.get(first.headers["location"])
    done = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf_of(form.text)})
    assert done.status_code == 303 and done.headers["location"] == url
    page = client.get(url, headers={"accept": "text/html"})
    assert "tariff-app" in page.text and 'value="approve"' in page.text and 'value="deny"' in page.text


def test_login_next_is_never_an_open_redirect(served_connect):
    from tests.streams.console.conftest import PASSWORD, csrf_of

    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        client = httpx.Client(base_url=served_connect.url, follow_redirects=False, timeout=30)
        form = client.get("/login", params={"next": evil})
        done = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf_of(form.text)})
        assert done.headers["location"] == "/customer"


def test_deny_redirects_with_access_denied_and_is_a_consent_leaf(served_connect, party):
    connect = served_connect.state.connect
    before = len(consent_events(connect.store, index_key=connect.index_key))
    _, challenge = pkce()
    answer = consent(served_connect.url, "alice", authorize_url(party, challenge), decision="deny")
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert answer.status_code == 302 and query["error"] == ["access_denied"] and query["state"] == ["st-1"]
    events = consent_events(connect.store, index_key=connect.index_key)
    assert len(events) == before + 1 and events[-1]["event"] == "deny"
    assert events[-1]["body"]["client_id"] == party["client_id"]


def test_a_refusal_gets_a_denial_receipt_that_verifies(served_connect, party, connect_data, monkeypatch):
    base, connect = served_connect.url, served_connect.state.connect
    _, challenge = pkce()
    consent(base, "alice", authorize_url(party, challenge), decision="deny", meters=["M-A1"])
    denial_id = consent_events(connect.store, index_key=connect.index_key)[-1]["grant_id"]
    alice = login(base, "alice")
    assert f"/customer/receipts/{denial_id}" in alice.get("/customer").text  # listed under "Requests I refused"
    answer = alice.get(f"/customer/receipts/{denial_id}")
    assert answer.status_code == 200, answer.text
    (receipt,) = answer.json()
    proof = receipt["meterseal"]
    assert proof["event"] == "denial" and proof["state"] == "denied" and proof["grant_id"] == denial_id
    assert proof["client_id"] == party["client_id"] and proof["meters"] == 1 and "endsReceipt" not in receipt
    assert receipt["services"][0]["purposes"][0]["thirdPartyDisclosure"] is False
    assert receipt["piiPrincipalId"] and "M-A1" not in json.dumps(receipt)
    vkeys = [Verifier.from_vkey(v) for v in httpx.get(f"{base}/.well-known/meterseal-vkeys").json()["vkeys"]]
    assert verify_receipt(receipt, vkeys)
    # another customer cannot read it; a tampered receipt does not verify
    assert login(base, "bob").get(f"/customer/receipts/{denial_id}").status_code == 404
    forged = json.loads(json.dumps(receipt))
    forged["meterseal"]["consent_event"]["at_ms"] += 1
    with pytest.raises(ShareError):
        verify_receipt(forged, vkeys)
    # the operator's CLI gives the same receipt
    monkeypatch.setenv("METERSEAL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("METERSEAL_CONNECT_PUBLIC_URL", base)
    out = CliRunner().invoke(main, ["--data-dir", str(connect_data["dir"]), "grant", "receipt", denial_id])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output[out.output.index("["):]) == [receipt]


def test_redirect_uri_mismatch_and_open_redirect_are_shown_not_followed(served_connect, party):
    _, challenge = pkce()
    client = login(served_connect.url, "alice")
    for uri in (party["redirect_uri"] + "/extra", "https://evil.example/cb", party["redirect_uri"] + "?x=1"):
        r = client.get(authorize_url(party, challenge, redirect_uri=uri), headers={"accept": "text/html"})
        assert r.status_code == 400 and "location" not in r.headers, uri


def test_pkce_is_required_s256_only_and_checked(served_connect, party):
    base = served_connect.url
    client = login(base, "alice")
    _, challenge = pkce()
    for extra in ({"code_challenge": None, "code_challenge_method": None}, {"code_challenge_method": "plain"}):
        url = authorize_url(party, challenge, **extra)
        r = client.get(url, headers={"accept": "text/html"})
        assert r.status_code == 302 and "error=invalid_request" in r.headers["location"], r.text
    verifier, challenge = pkce()
    code = code_of(consent(base, "alice", authorize_url(party, challenge)))
    assert exchange(base, party, code, None).json()["error"] == "invalid_request"  # missing verifier
    verifier, challenge = pkce()
    code = code_of(consent(base, "alice", authorize_url(party, challenge)))
    assert exchange(base, party, code, pkce()[0]).json()["error"] == "invalid_grant"  # wrong verifier


def test_code_reuse_revokes_the_tokens_issued_from_it(served_connect, party):
    base = served_connect.url
    verifier, challenge = pkce()
    code = code_of(consent(base, "alice", authorize_url(party, challenge)))
    tokens = exchange(base, party, code, verifier).json()
    sub = tokens["resourceURI"].split("/espi", 1)[1]
    path = "/espi" + sub
    assert espi_get(base, "/espi/1_1/resource/ReadServiceStatus", tokens["access_token"]).status_code == 200
    again = exchange(base, party, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert espi_get(base, path, tokens["access_token"]).status_code == 401
    refresh = httpx.post(f"{base}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                         auth=(party["client_id"], party["secret"]))
    assert refresh.json()["error"] == "invalid_grant"


def test_code_for_another_client_and_a_wrong_secret_fail(served_connect, party):
    base, connect = served_connect.url, served_connect.state.connect
    other, other_secret = connect.register("other-app", redirect_uri=party["redirect_uri"], scope=SCOPE)
    verifier, challenge = pkce()
    code = code_of(consent(base, "alice", authorize_url(party, challenge)))
    stolen = exchange(base, party, code, verifier, client_id=other.client_id, secret=other_secret)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"
    verifier, challenge = pkce()
    code = code_of(consent(base, "alice", authorize_url(party, challenge)))
    wrong = exchange(base, party, code, verifier, secret="not-the-secret")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_expired_code_is_refused(served_connect, party):
    base, tokens = served_connect.url, served_connect.state.connect.tokens
    verifier, challenge = pkce()
    code = code_of(consent(base, "alice", authorize_url(party, challenge)))
    from streams.connect.tokens import digest

    tokens._con().execute("UPDATE codes SET expires_at = expires_at - 61 WHERE hash = ?", (digest(code),))
    assert exchange(base, party, code, verifier).json()["error"] == "invalid_grant"


def test_refresh_rotates_and_a_reused_refresh_token_ends_the_family(served_connect, party):
    base = served_connect.url
    tokens = new_tokens(base, party)
    auth = (party["client_id"], party["secret"])
    fresh = httpx.post(f"{base}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                       auth=auth).json()
    assert fresh["refresh_token"] != tokens["refresh_token"] and fresh["resourceURI"] == tokens["resourceURI"]
    assert espi_get(base, "/espi/1_1/resource/ReadServiceStatus", fresh["access_token"]).status_code == 200
    replay = httpx.post(f"{base}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                        auth=auth)
    assert replay.json()["error"] == "invalid_grant"
    assert espi_get(base, "/espi/1_1/resource/ReadServiceStatus", fresh["access_token"]).status_code == 401
    again = httpx.post(f"{base}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]},
                       auth=auth)
    assert again.json()["error"] == "invalid_grant"


def test_refresh_token_never_outlives_the_grant(served_connect, party):
    connect = served_connect.state.connect
    tokens = new_tokens(served_connect.url, party)
    grant = connect.grant(tokens["resourceURI"].rsplit("/", 1)[1])
    row = connect.tokens.find(tokens["refresh_token"], "refresh")
    from streams.share.espi import _epoch

    assert row["expires_at"] <= _epoch(grant.expires_at) + 1


def test_a_token_with_a_tampered_byte_is_unknown(served_connect, party):
    base = served_connect.url
    tokens = new_tokens(base, party)
    token = tokens["access_token"]
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    r = espi_get(base, "/espi/1_1/resource/ReadServiceStatus", tampered)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_scope_wider_than_registered_or_malformed_is_invalid_scope(served_connect, party):
    client = login(served_connect.url, "alice")
    _, challenge = pkce()
    for scope in ("FB=1_3_4_5_10;IntervalDuration=900;BlockDuration=daily;HistoryLength=2592000",  # gas: wider
                  "FB=4_5;IntervalDuration=300",  # finer than registered
                  "FB=4_5;HistoryLength=99999999",  # longer history
                  "", "FB=4_5;;", "FB=4_x", "FB=4_77", "FB=4;Colour=blue", "FB=" + "4_" * 200 + "5",
                  "FB=4 5", "FB=4<x/>"):
        r = client.get(authorize_url(party, challenge, scope=scope), headers={"accept": "text/html"})
        assert r.status_code == 302 and "error=invalid_scope" in r.headers["location"], (scope, r.status_code)


def test_only_a_customer_consents_and_only_for_its_own_meters(served_connect, party):
    base, connect = served_connect.url, served_connect.state.connect
    _, challenge = pkce()
    url = authorize_url(party, challenge)
    admin = login(base, "root")
    assert admin.get(url, headers={"accept": "text/html"}).status_code == 403
    count = len(list_grants(connect.store, index_key=connect.index_key))
    r = consent(base, "alice", url, meters=["M-B1"])  # bob's meter
    assert r.status_code == 404
    r = consent(base, "alice", url, meters=["M-A1", "M-B1"])
    assert r.status_code == 404
    assert len(list_grants(connect.store, index_key=connect.index_key)) == count


def test_the_consent_form_needs_the_sessions_csrf_token(served_connect, party):
    base, connect = served_connect.url, served_connect.state.connect
    count = len(list_grants(connect.store, index_key=connect.index_key))
    _, challenge = pkce()
    for csrf in ("", "forged-token"):
        r = consent(base, "alice", authorize_url(party, challenge), csrf=csrf)
        assert r.status_code == 403
    assert len(list_grants(connect.store, index_key=connect.index_key)) == count


def test_a_party_on_hold_or_in_review_gets_no_new_authorization_and_reads_nothing(served_connect, party):
    base, connect = served_connect.url, served_connect.state.connect
    tokens = new_tokens(base, party)
    try:
        for status in ("on-hold", "review"):
            connect.set_party_status(party["name"], status)
            client = login(base, "alice")
            _, challenge = pkce()
            r = client.get(authorize_url(party, challenge), headers={"accept": "text/html"})
            assert r.status_code == 302 and "error=unauthorized_client" in r.headers["location"]
            assert espi_get(base, "/espi/1_1/resource/ReadServiceStatus", tokens["access_token"]).status_code == 403
            refresh = httpx.post(f"{base}/oauth/token", auth=(party["client_id"], party["secret"]),
                                 data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
            assert refresh.status_code >= 400
    finally:
        connect.set_party_status(party["name"], "production")


def test_rfc7009_revocation_of_an_access_token(served_connect, party):
    base = served_connect.url
    tokens = new_tokens(base, party)
    r = httpx.post(f"{base}/oauth/revoke", data={"token": tokens["access_token"], "token_type_hint": "access_token"},
                   auth=(party["client_id"], party["secret"]))
    assert r.status_code == 200
    assert espi_get(base, "/espi/1_1/resource/ReadServiceStatus", tokens["access_token"]).status_code == 401
    # an unknown token is also 200 (RFC 7009 §2.2), and a wrong secret is 401
    assert httpx.post(f"{base}/oauth/revoke", data={"token": "nope"}, auth=(party["client_id"], party["secret"])).status_code == 200
    assert httpx.post(f"{base}/oauth/revoke", data={"token": "nope"}, auth=(party["client_id"], "x")).status_code == 401
