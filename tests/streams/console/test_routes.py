"""Role x route matrix, customer isolation, escaping, CSRF, session expiry and login throttling."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from streams.console.app import create_app, routes
from streams.console.roles import ACCESS, PUBLIC
from streams.console.sessions import SessionStore

from .conftest import PARTY, EVIL, PASSWORD, ROLE_USERS, csrf_of, login, make_state, session_csrf

ROLES = ("anonymous", "admin", "operator", "auditor", "analyst", "customer")
R = "from=2024-03-01&to=2024-03-03"
GRANT_OK = 303
DP_OK = 409  # anna has no budget yet: refused, nothing released

# every guarded route: the status each role gets, in the order of ROLES (customer = alice, in her own scope)
MATRIX = {
    ("GET", "/"):                                   (303, 303, 303, 303, 303, 303),
    ("GET", "/operator"):                           (303, 200, 200, 403, 403, 403),
    ("GET", "/customer"):                           (303, 403, 403, 403, 403, 200),
    ("GET", "/customer/download"):                  (303, 403, 403, 403, 403, 200),
    ("POST", "/customer/grants"):                   (303, 403, 403, 403, 403, GRANT_OK),
    ("POST", "/customer/grants/{grant_id}/revoke"): (303, 403, 403, 403, 403, 404),
    ("GET", "/auditor"):                            (303, 200, 403, 200, 403, 403),
    ("POST", "/auditor/verify"):                    (303, 200, 403, 200, 403, 403),
    ("GET", "/auditor/verify"):                     (303, 200, 403, 200, 403, 403),
    ("GET", "/analyst"):                            (303, 200, 403, 403, 200, 403),
    ("POST", "/analyst/query"):                     (303, 403, 403, 403, DP_OK, 403),
    ("GET", "/fl"):                                 (303, 200, 200, 403, 200, 403),
    ("GET", "/admin"):                              (303, 200, 403, 403, 403, 403),
    ("POST", "/admin/users"):                       (303, 400, 403, 403, 403, 403),  # no name given: 400
    ("POST", "/admin/users/{name}/remove"):         (303, 404, 403, 403, 403, 403),
    ("POST", "/admin/grants/{grant_id}/revoke"):    (303, 404, 403, 403, 403, 403),
    ("GET", "/api/meters/{meter_id:path}/readings"):     (401, 403, 403, 403, 403, 200),
    ("GET", "/api/meters/{meter_id:path}/usage"):        (401, 403, 403, 403, 403, 200),
    ("GET", "/api/bills"):                          (401, 403, 403, 403, 403, 200),
    ("GET", "/api/grants"):                         (401, 403, 403, 403, 403, 200),
    ("GET", "/api/alerts"):                         (401, 200, 200, 403, 403, 200),
    ("GET", "/events/alerts"):                      (401, 200, 200, 403, 403, 200),
    ("GET", "/api/regions/usage"):                  (401, 200, 200, 403, 403, 403),
    ("GET", "/api/status"):                         (401, 200, 200, 403, 403, 403),
    ("GET", "/api/ledger/checkpoints"):             (401, 200, 403, 200, 403, 403),
    ("GET", "/api/ledger/proof/{record_id}"):       (401, 200, 403, 200, 403, 200),
    # Connect My Data: no OAuth parameters (400), another's or no grant (404), no such party (404)
    ("GET", "/oauth/authorize"):                    (303, 403, 403, 403, 403, 400),
    ("POST", "/oauth/authorize"):                   (303, 403, 403, 403, 403, 400),
    ("GET", "/customer/receipts/{grant_id}"):       (303, 403, 403, 403, 403, 404),
    ("POST", "/customer/connect/{grant_id}/revoke"): (303, 403, 403, 403, 403, 404),
    ("POST", "/admin/parties"):                     (303, 400, 403, 403, 403, 403),
    ("POST", "/admin/parties/{name}/rotate"):       (303, 404, 403, 403, 403, 403),
    ("POST", "/admin/parties/{name}/status"):       (303, 404, 403, 403, 403, 403),
    ("GET", "/operator/alerts"):                    (303, 200, 200, 403, 403, 403),
    ("POST", "/operator/silences"):                 (303, 303, 303, 403, 403, 403),
    ("POST", "/operator/silences/{silence_id}/expire"): (303, 404, 404, 403, 403, 403),
    ("POST", "/operator/alerts/{fp}/ack"):          (303, 303, 303, 403, 403, 403),
    ("GET", "/api/alerts/history"):                 (401, 200, 200, 403, 403, 200),
    ("GET", "/customer/alerts"):                    (303, 403, 403, 403, 403, 200),
    ("POST", "/customer/alerts/email"):             (303, 403, 403, 403, 403, 303),
    ("GET", "/admin/alert-rules"):                  (303, 200, 403, 403, 403, 403),
    ("POST", "/admin/alert-rules"):                 (303, 409, 403, 403, 403, 403),
    # erasure requests: an unknown request is a 404 (another customer's too); alice's own request is recorded
    ("POST", "/customer/erasure"):                  (303, 403, 403, 403, 403, 303),
    ("GET", "/customer/erasure/{request_id}/receipt"): (303, 403, 403, 403, 403, 404),
    ("POST", "/admin/erasure/{request_id}/approve"): (303, 404, 403, 403, 403, 403),
    ("POST", "/admin/erasure/{request_id}/refuse"): (303, 404, 403, 403, 403, 403),
    ("POST", "/logout"):                            (303, 303, 303, 303, 303, 303),  # last: it ends the session
}


def concrete(path: str, record_id: str) -> str:
    url = (path.replace("{meter_id:path}", "M-ALICE").replace("{record_id}", record_id).replace("{grant_id}", "g-1")
           .replace("{name}", "no-such-user"))
    url = url.replace("{silence_id}", "0000000000000000").replace("{fp}", "0123456789abcdef")
    url = url.replace("{request_id}", "0123456789abcdef01234567")
    if path in ("/customer/download", "/api/meters/{meter_id:path}/readings"):
        url += "?" + R
    return url


def call(client: httpx.Client, method: str, path: str, url: str, csrf: str | None) -> int:
    api = path.startswith(("/api/", "/events/"))
    headers = {"accept": "application/json" if api else "text/html"}
    if method == "POST":
        data = {"csrf_token": csrf or "", "party": PARTY, "meter": "M-ALICE", "from": "2024-03-01", "to": "2024-03-02",
                "metric": "sum", "by": "region", "rho": "0.05", "matchers": "region=north", "reason": "matrix",
                "email": "alice@example.org"}
        return client.post(url, data=data, headers=headers).status_code
    if path.startswith("/events/"):
        with client.stream("GET", url, headers=headers) as r:
            return r.status_code
    return client.get(url, headers=headers).status_code


def test_the_matrix_is_the_role_table(served):
    served_routes = set(routes(create_app(served.state)))
    guarded = {r for r in served_routes if ACCESS[r] != PUBLIC}
    assert set(MATRIX) == guarded, "every guarded route has a row, every row a route"
    for route, statuses in MATRIX.items():
        allowed = {role for role, status in zip(ROLES, statuses) if role != "anonymous" and status != 403}
        assert allowed == set(ACCESS[route]), route


def test_role_by_route(served):
    record = served.state.vault.bills(["M-ALICE"])[0]["record_id"]
    got = {}
    for i, role in enumerate(ROLES):
        if role == "anonymous":
            client, csrf = httpx.Client(base_url=served.url, timeout=30), None
        else:
            client = login(served.url, ROLE_USERS[role])
            csrf = session_csrf(client)
        for (method, path), statuses in MATRIX.items():
            got[(method, path, role)] = (call(client, method, path, concrete(path, record), csrf), statuses[i])
        client.close()
    wrong = {k: v for k, v in got.items() if v[0] != v[1]}
    assert not wrong, f"(got, expected): {wrong}"


def test_public_routes(served):
    with httpx.Client(base_url=served.url) as c:
        assert c.get("/login").status_code == 200
        assert c.get("/healthz").json() == {"ok": True}
        assert "meterseal_console_requests" in c.get("/metrics").text
        assert c.get("/static/vendor/htmx.min.js").status_code == 200
        r = c.get("/login")
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "max-age" in cookie


def _alert(meter_tok: str, reason: str = "spike: 5.2 sd above the meter's usual", **extra) -> dict:
    now = int(time.time() * 1000)
    return {"format": 1, "alert_id": f"a-{meter_tok[:6]}-{now}-{reason[:5]}", "meter_tok": meter_tok, "ts": "2024-03-02T10:00:00+00:00",
            "kind": "spike", "score": 0.97, "severity": "warning", "reason": reason, "region": "north", "kwh": None,
            "ingested_at_ms": now, "detected_at_ms": now, **extra}


def test_customer_isolation(served, console_data):
    vault = served.state.vault
    bob_bill = vault.bills(["M-BOB"])[0]
    bob_tok = vault.meter_token("M-BOB")
    served.state.hub.publish(_alert(bob_tok, "bob's own alert"))
    served.state.hub.publish(_alert(vault.meter_token("M-ALICE"), "alice's own alert"))
    alice = login(served.url, "alice")
    csrf = session_csrf(alice)
    probes = [
        alice.get("/api/meters/M-BOB/readings?" + R),
        alice.get("/api/meters/M-BOB/usage"),
        alice.get("/api/meters/NO-SUCH-METER/readings?" + R),
        alice.get("/api/bills?meter=M-BOB"),
        alice.get(f"/api/ledger/proof/{bob_bill['record_id']}"),
        alice.get("/api/ledger/proof/no-such-record"),
        alice.get("/customer/download?meter=M-BOB&" + R),
        alice.post("/customer/grants", data={"csrf_token": csrf, "party": "p", "meter": "M-BOB",
                                             "from": "2024-03-01", "to": "2024-03-02"}),
        alice.post("/customer/grants/some-grant-of-bob/revoke", data={"csrf_token": csrf}),
    ]
    for r in probes:
        assert r.status_code == 404, (r.request.url, r.status_code)
        assert "M-BOB" not in r.text and bob_bill["bill_no"] not in r.text and bob_tok not in r.text
    # not-yours and not-there answer alike
    assert probes[0].text == probes[2].text
    # what alice does see is hers only
    mine = alice.get("/api/bills").json()["bills"]
    assert {b["meter_id"] for b in mine} == {"M-ALICE"} and len(mine) == 2
    alerts = alice.get("/api/alerts").json()["alerts"]
    assert alerts and {a["meter_tok"] for a in alerts} == {vault.meter_token("M-ALICE")}
    page = alice.get("/customer", headers={"accept": "text/html"}).text
    assert "alice&#39;s own alert" in page and "bob&#39;s own alert" not in page and bob_bill["bill_no"] not in page
    csv = alice.get("/customer/download?format=csv&" + R)
    assert csv.status_code == 200 and "attachment" in csv.headers["content-disposition"]
    assert csv.text.count("M-ALICE") == 72 and "M-BOB" not in csv.text  # 3 days x 24 hourly readings
    feed = alice.get("/customer/download?" + R)  # Green Button by default: an ESPI feed of her meter only
    assert feed.status_code == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    assert feed.text.count("<espi:IntervalReading>") == 72 and "M-BOB" not in feed.text
    from tests.streams.share.test_espi import GB
    if (GB / "espi.xsd").exists():
        import xmlschema

        assert list(xmlschema.XMLSchema(str(GB / "espi.xsd")).iter_errors(feed.text)) == []
    assert alice.get("/customer/download?format=pdf&" + R).status_code == 400
    readings = alice.get("/api/meters/M-ALICE/readings?" + R).json()["readings"]
    assert len(readings) == 72 and readings[0]["ts"].startswith("2024-03-01T00:00")


def test_live_alerts_reach_only_their_viewers(served):
    vault = served.state.vault
    alice = login(served.url, "alice")
    olga = login(served.url, "olga")
    got = {"alice": [], "olga": []}

    def read(client, who, n):
        with client.stream("GET", "/events/alerts", timeout=10) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data:") and "meter_tok" in line:
                    got[who].append(json.loads(line[5:]))
                    if len(got[who]) == n:
                        return

    import threading

    threads = [threading.Thread(target=read, args=(alice, "alice", 1)), threading.Thread(target=read, args=(olga, "olga", 2))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while served.state.hub.viewers < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    served.state.hub.publish(_alert(vault.meter_token("M-BOB"), "live bob"))
    served.state.hub.publish(_alert(vault.meter_token("M-ALICE"), "live alice"))
    for t in threads:
        t.join(10)
    assert [a["reason"] for a in got["alice"]] == ["live alice"]
    assert [a["reason"] for a in got["olga"]] == ["live bob", "live alice"]


def test_script_renders_inert(served):
    vault = served.state.vault
    served.state.hub.publish(_alert(vault.meter_token(f"M-{EVIL}"), f"reason {EVIL}", region=f"x{EVIL}"))
    for name, page in (("eve", "/customer"), ("olga", "/operator"), ("root", "/admin")):
        client = login(served.url, name)
        html = client.get(page, headers={"accept": "text/html"}).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, (name, page)
        assert EVIL not in html, (name, page)
    eve = login(served.url, "eve")
    assert eve.get(f"/api/meters/M-{EVIL}/usage").status_code == 200  # her odd meter id still works, as data


def test_csrf_is_required_for_every_state_change(served):
    olga, root = login(served.url, "olga"), login(served.url, "root")
    olga_csrf = session_csrf(olga)
    assert root.post("/auditor/verify").status_code == 403                                   # no token
    assert root.post("/auditor/verify", data={"csrf_token": olga_csrf}).status_code == 403   # another session's
    assert root.post("/auditor/verify", headers={"x-csrf-token": "forged"}).status_code == 403
    assert root.post("/logout").status_code == 403 and root.get("/admin").status_code == 200  # still logged in
    with httpx.Client(base_url=served.url) as anon:
        anon.get("/login")
        r = anon.post("/login", data={"username": "root", "password": PASSWORD})  # login form without its token
        assert r.status_code == 403 and "set-cookie" not in r.headers
    assert olga.post("/logout", data={"csrf_token": olga_csrf}).status_code == 303
    assert olga.get("/api/status").status_code == 401  # the session is gone on the server


def test_sessions_expire(console_data):
    now = [1_000.0]
    state = make_state(console_data, sessions=SessionStore(ttl_s=60, clock=lambda: now[0]))
    with TestClient(create_app(state), base_url="http://127.0.0.1") as c:
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303 and "max-age=60" in r.headers["set-cookie"].lower()
        assert c.get("/api/status").status_code == 200
        now[0] += 61
        assert c.get("/api/status").status_code == 401
        assert c.get("/operator", headers={"accept": "text/html"}, follow_redirects=False).headers["location"] == \
            "/login?next=%2Foperator"  # back to the page after logging in again


def test_wrong_passwords_are_throttled(console_data):
    state = make_state(console_data)  # Throttle(limit=3)
    with TestClient(create_app(state), base_url="http://127.0.0.1") as c:
        for _ in range(3):
            token = csrf_of(c.get("/login").text)
            assert c.post("/login", data={"username": "audrey", "password": "guess" * 3, "csrf_token": token}).status_code == 401
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"username": "audrey", "password": PASSWORD, "csrf_token": token}, follow_redirects=False)
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0  # even the right password, for now
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"username": "anna", "password": PASSWORD, "csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303  # other accounts are not locked out
        assert 'meterseal_console_logins_total{outcome="throttled"} 1.0' in c.get("/metrics").text


def test_proof_download_is_the_cli_bundle_and_verifies(served, console_data, tmp_path):
    from click.testing import CliRunner

    from streams.cli.main import main

    from .conftest import PASSPHRASE

    record = served.state.vault.bills(["M-ALICE"])[0]["record_id"]
    audrey = login(served.url, "audrey")
    r = audrey.get(f"/api/ledger/proof/{record}?download=1")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    env = {"METERSEAL_PASSPHRASE": PASSPHRASE}
    cli = CliRunner().invoke(main, ["--data-dir", str(console_data["dir"]), "ledger", "prove", record], env=env)
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == r.json()
    (tmp_path / "proof.json").write_text(r.text)
    trusted = served.state.vault.keystore.ledger_verifier.vkey  # the owner's key, not the bundle's copy
    ok = CliRunner().invoke(main, ["ledger", "verify-proof", str(tmp_path / "proof.json"), "--vkey", trusted])
    assert ok.exit_code == 0 and ok.stdout.startswith("ok: record"), ok.output


def test_analyst_spends_a_budget_and_is_refused_past_it(served):
    privacy = served.state.privacy
    assert privacy is not None
    from streams.privacy import set_budget

    set_budget(served.state.vault.store_dir, signer=served.state.vault.signer, rho=0.1, analyst="anna")
    anna = login(served.url, "anna")
    csrf = session_csrf(anna)
    ask = {"csrf_token": csrf, "metric": "sum", "by": "region", "from": "2024-03-01", "to": "2024-03-07", "rho": "0.06"}
    r = anna.post("/analyst/query", data=ask, headers={"accept": "text/html"})
    assert r.status_code == 200 and "Answer (noisy" in r.text and "noise scale" in r.text
    left = privacy.status("anna")["analysts"][0]["rho_left"]
    assert 0 < left < 0.1
    r = anna.post("/analyst/query", data=ask, headers={"accept": "text/html"})  # 0.06 more would pass 0.1
    assert r.status_code == 409 and "nothing released" in r.text and "Answer (noisy" not in r.text
    assert privacy.status("anna")["analysts"][0]["rho_left"] == left


def test_a_live_stream_ends_with_its_session(served):
    olga = login(served.url, "olga")
    csrf = session_csrf(olga)
    events = []
    import threading

    def read():
        with olga.stream("GET", "/events/alerts", timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                    if events[-1] == "ready":
                        with httpx.Client(base_url=served.url, cookies=olga.cookies) as other:
                            assert other.post("/logout", data={"csrf_token": csrf}).status_code == 303
    t = threading.Thread(target=read)
    t.start()
    t.join(20)
    assert not t.is_alive() and events == ["ready", "logged-out"]


def test_kiosk_mode_has_no_chrome(served):
    olga = login(served.url, "olga")
    page = olga.get("/operator?kiosk=1", headers={"accept": "text/html"}).text
    assert 'class="kiosk"' in page and "<nav" not in page and "Log out" not in page
    assert '<option value="30" selected>' in page  # auto-refresh on
    assert "<nav" in olga.get("/operator", headers={"accept": "text/html"}).text


def test_a_removed_account_is_logged_out_at_once(served):
    served.state.users.add("temp-op", "operator", password=PASSWORD)
    client = login(served.url, "temp-op")
    assert client.get("/api/status").status_code == 200
    served.state.users.remove("temp-op")  # what `meterseal console user remove temp-op` does
    assert client.get("/api/status").status_code == 401
