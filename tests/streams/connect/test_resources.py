"""The ESPI resource server: feeds that validate against espi.xsd with the source's values to the Wh, and a token
that never reads outside its grant (other meters, other subscriptions, older than HistoryLength, finer
intervals)."""

from __future__ import annotations

import datetime as dt
import json
import time

import httpx
import pytest

from streams.exceptions import MeterSealError
from streams.share.espi import parse_feed
from tests.conftest import DATA

from .conftest import SCOPE
from .flow import authorize_url, code_of, consent, espi_get, exchange, new_tokens, pkce

xmlschema = pytest.importorskip("xmlschema", reason="xmlschema is missing: pip install -e '.[test]'")
ESPI = "/espi/1_1/resource"


@pytest.fixture(scope="module")
def schema():
    return xmlschema.XMLSchema(str(DATA / "vectors" / "greenbutton" / "espi.xsd"))


def errors(schema, data: bytes) -> list[str]:
    return [str(e) for e in schema.iter_errors(data.decode())]


def sub_path(tokens: dict) -> str:
    return ESPI + tokens["resourceURI"].split(ESPI, 1)[1]


def tokens_for(served, party, scope: str, meters: list[str], customer: str = "alice") -> dict:
    verifier, challenge = pkce()
    code = code_of(consent(served.url, customer, authorize_url(party, challenge, scope=scope), meters=meters))
    r = exchange(served.url, party, code, verifier)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_feed_validates_and_equals_the_source_to_the_wh(served_connect, party, connect_data, schema):
    tokens = new_tokens(served_connect.url, party, meters=["M-A1", "M-A2"])
    r = espi_get(served_connect.url, sub_path(tokens), tokens["access_token"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/atom+xml")
    assert errors(schema, r.content) == []
    got = {(row["meter_id"], int(dt.datetime.fromisoformat(row["ts"]).timestamp())): row["wh"]
           for row in parse_feed(r.content)}
    source = connect_data["source"]
    now = time.time()
    want = {k: v for k, v in source.items() if k[0] in ("M-A1", "M-A2") and k[1] <= now}
    assert got == want and len(got) > 2 * 96


def test_a_token_never_reads_another_subscription_or_meter(served_connect, party):
    base = served_connect.url
    alice = new_tokens(base, party, meters=["M-A1"])
    bob = new_tokens(base, party, customer="bob")
    r = espi_get(base, sub_path(bob), alice["access_token"])
    assert r.status_code == 403
    feed = espi_get(base, sub_path(alice), alice["access_token"]).content
    assert {row["meter_id"] for row in parse_feed(feed)} == {"M-A1"}
    up = sub_path(alice).replace("/Batch/Subscription/", "/Subscription/") + "/UsagePoint"
    assert espi_get(base, up + "/M-A2", alice["access_token"]).status_code == 404
    assert espi_get(base, up + "/M-B1", alice["access_token"]).status_code == 404
    assert espi_get(base, up + "/M-A1", alice["access_token"]).status_code == 200
    assert espi_get(base, up, alice["access_token"]).text.count("<entry>") == 1


def test_nothing_older_than_history_length(served_connect, party, schema):
    scope = "FB=1_3_4_5_13_14_39;IntervalDuration=900;BlockDuration=daily;HistoryLength=86400"
    tokens = tokens_for(served_connect, party, scope, ["M-A1"])
    r = espi_get(served_connect.url, sub_path(tokens), tokens["access_token"])
    assert errors(schema, r.content) == []
    rows = parse_feed(r.content)
    oldest = min(dt.datetime.fromisoformat(row["ts"]).timestamp() - row["interval_s"] for row in rows)
    assert oldest >= time.time() - 86400 - 60 and len(rows) <= 96


def test_never_finer_than_the_granted_interval_it_aggregates_up(served_connect, party, connect_data, schema):
    scope = "FB=1_3_4_5_13_14_39;IntervalDuration=3600;BlockDuration=daily;HistoryLength=2592000"
    tokens = tokens_for(served_connect, party, scope, ["M-A1"])
    r = espi_get(served_connect.url, sub_path(tokens), tokens["access_token"])
    assert errors(schema, r.content) == []
    rows = parse_feed(r.content)
    assert rows and {row["interval_s"] for row in rows} == {3600}
    source = connect_data["source"]
    for row in rows:
        end = int(dt.datetime.fromisoformat(row["ts"]).timestamp())
        assert row["wh"] == sum(source[("M-A1", end - 900 * k)] for k in range(4))


def test_published_min_and_max_filter_by_time(served_connect, party, connect_data):
    tokens = new_tokens(served_connect.url, party, meters=["M-A1"])
    start = connect_data["start"] + dt.timedelta(days=1)
    lo, hi = start.isoformat().replace("+00:00", "Z"), (start + dt.timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    r = espi_get(served_connect.url, sub_path(tokens), tokens["access_token"],
                 params={"published-min": lo, "published-max": hi})
    assert len(parse_feed(r.content)) == 8
    bad = espi_get(served_connect.url, sub_path(tokens), tokens["access_token"], params={"published-min": "yesterday"})
    assert bad.status_code == 400


def test_authorization_and_service_status_validate(served_connect, party, schema):
    base = served_connect.url
    tokens = new_tokens(base, party)
    auth = espi_get(base, ESPI + tokens["authorizationURI"].split(ESPI, 1)[1], tokens["access_token"])
    assert auth.status_code == 200 and errors(schema, auth.content) == []
    assert b"<espi:status>1</espi:status>" in auth.content and SCOPE.encode() in auth.content
    status = espi_get(base, ESPI + "/ReadServiceStatus", tokens["access_token"])
    assert status.status_code == 200 and b"<espi:currentStatus>1</espi:currentStatus>" in status.content
    assert httpx.get(f"{base}{ESPI}/ReadServiceStatus", timeout=30).status_code == 401


def test_bundle_for_a_party_with_a_public_key_opens_with_share_open(served_connect, receiver):
    from streams.share.bundle import open_bundle
    from streams.share.parties import PartyKey

    connect, base = served_connect.state.connect, served_connect.url
    key = PartyKey.generate()
    client, secret = connect.register("keyed-app", redirect_uri="https://keyed.example/cb", scope=SCOPE,
                                      public_key=key.public_key)
    keyed = {"name": "keyed-app", "client_id": client.client_id, "secret": secret,
             "redirect_uri": "https://keyed.example/cb"}
    tokens = new_tokens(base, keyed, meters=["M-A1"])
    r = espi_get(base, sub_path(tokens), tokens["access_token"],
                 headers={"Accept": "application/vnd.meterseal.bundle+json"})
    assert r.status_code == 200, r.text
    opened = open_bundle(r.content, party=key, verifiers=[served_connect.state.vault.keystore.ledger_verifier])
    assert opened.records and {rec["meter_id"] for rec in opened.records} == {"M-A1"}
    assert opened.grant["grant_id"] == tokens["resourceURI"].rsplit("/", 1)[1]


def test_bundle_is_refused_to_a_party_without_a_key(served_connect, party):
    tokens = new_tokens(served_connect.url, party, meters=["M-A1"])
    r = espi_get(served_connect.url, sub_path(tokens), tokens["access_token"], params={"format": "bundle"})
    assert r.status_code == 406 and "public key" in r.json()["error_description"]


def test_party_names_cannot_inject_xml_and_texts_are_escaped(served_connect):
    connect = served_connect.state.connect
    for name in ("evil</title><x>", "a b", "<script>", "x" * 80):
        with pytest.raises(MeterSealError):
            connect.register(name, redirect_uri="https://x.example/cb", scope=SCOPE)
    from streams.connect.resources import batch_list

    assert b"<x>" not in batch_list(["https://x.example/a?<x>&y"])
    assert json.loads(json.dumps({"ok": True}))  # the JSON error bodies are json.dumps'd, never templated
