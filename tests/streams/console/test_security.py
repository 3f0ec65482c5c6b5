"""The console attacked as an outsider and as each role: one test per finding, each failing on the code before
its fix (sessions tied to a name, streams that never re-checked the account, a check-then-act throttle, server
state for every anonymous visitor, 500s without headers, an OIDC client per call, unbounded text, forwarded
headers believed from any local client)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from streams.console.app import create_app

from .conftest import PASSWORD, PARTY, Served, csrf_of, login, make_state, session_csrf

OTHER_PASSWORD = "another long password"
HTML = {"accept": "text/html"}


def _client(state, **kwargs) -> TestClient:
    return TestClient(create_app(state), base_url="http://127.0.0.1", **kwargs)


def _login(client, name: str, password: str = PASSWORD, **extra):
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token, **extra},
                       follow_redirects=False)


def _headers_ok(response) -> bool:
    csp = response.headers.get("content-security-policy", "")
    return "default-src 'none'" in csp and response.headers.get("x-frame-options") == "DENY"


# 1. a removed-and-re-added name does not revive old sessions; a new password or role ends them ---------
def test_a_re_added_account_does_not_inherit_an_old_cookie(served):
    users = served.state.users
    users.add("mallory", "customer", password=PASSWORD, meters=["M-ALICE"])
    old = login(served.url, "mallory")
    assert old.get("/api/bills").status_code == 200
    users.remove("mallory")  # what `meterseal console user remove mallory` does, in another process
    users.add("mallory", "admin", password=OTHER_PASSWORD)
    assert old.get("/admin", headers=HTML).status_code == 303  # to the login page, not the admin's
    assert old.get("/api/status").status_code == 401 and old.get("/api/bills").status_code == 401
    fresh = login(served.url, "mallory", OTHER_PASSWORD)
    assert fresh.get("/admin", headers=HTML).status_code == 200
    users.remove("mallory")


def test_the_cli_in_another_process_ends_sessions(served, console_data):
    users = served.state.users
    users.add("carla", "operator", password=PASSWORD)
    client = login(served.url, "carla")
    assert client.get("/api/status").status_code == 200
    env = {**os.environ, "METERSEAL_USER_PASSWORD": OTHER_PASSWORD}
    cli = [sys.executable, "-m", "streams.cli", "--data-dir", str(console_data["dir"]), "console", "user"]
    done = subprocess.run([*cli, "passwd", "carla"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert client.get("/api/status").status_code == 401  # the old password's session has ended
    again = login(served.url, "carla", OTHER_PASSWORD)
    done = subprocess.run([*cli, "sessions", "carla", "--end"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ended" in done.stdout, done.stderr
    assert again.get("/api/status").status_code == 401
    users.remove("carla")


# 2. a live stream re-checks the account on every event ---------------------------------------------
@pytest.mark.parametrize("change", ["removed", "meters changed"])
def test_a_live_stream_closes_when_its_account_changes(served, change):
    from streams.console.users import UserStore

    users = served.state.users
    users.add("streamer", "customer", password=PASSWORD, meters=["M-ALICE"])
    client = login(served.url, "streamer")
    events: list[str] = []

    def read():
        with client.stream("GET", "/events/alerts", timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                    if events[-1] in ("logged-out", "alert"):
                        return
    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while events != ["ready"] and time.monotonic() < deadline:
        time.sleep(0.02)
    cli = UserStore(users.path)  # another process's view of the same file
    if change == "removed":
        cli.remove("streamer")
    else:
        cli.set_role("streamer", "customer", meters=["M-BOB"])
    from .test_routes import _alert

    served.state.hub.publish(_alert(served.state.vault.meter_token("M-ALICE"), f"after the change {change}"))
    reader.join(20)
    assert not reader.is_alive() and events == ["ready", "logged-out"]
    if change != "removed":
        users.remove("streamer")


# 3. twenty concurrent logins: reserved before hashing, at most a few Argon2 checks at once -----------
def test_concurrent_logins_are_throttled_and_bounded(console_data):
    state = make_state(console_data)  # Throttle(limit=3)
    state.users.add("target", "auditor", password=PASSWORD)
    served = Served(state)
    try:
        clients = [httpx.Client(base_url=served.url, timeout=60) for _ in range(20)]
        tokens = [csrf_of(c.get("/login").text) for c in clients]
        barrier, results = threading.Barrier(20), [None] * 20

        def attempt(i: int) -> None:
            password = PASSWORD if i == 7 else f"wrong guess number {i}"
            barrier.wait()
            results[i] = clients[i].post("/login", data={"username": "target", "password": password,
                                                         "csrf_token": tokens[i]})
        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        statuses = [r.status_code for r in results]
        checked = [s for s in statuses if s != 429]
        assert len(checked) <= 3, statuses  # the limit holds under concurrency
        assert all(int(r.headers["retry-after"]) > 0 for r in results if r.status_code == 429)
        gate = getattr(state, "password_gate", None)
        from streams.console.users import ARGON2_MIB

        assert gate is not None and gate.peak <= gate.size and gate.size * ARGON2_MIB <= 256
    finally:
        served.stop()
        state.users.remove("target")


# 4. an anonymous flood leaves no server state and ends no one's session -------------------------------
def test_an_anonymous_flood_logs_no_one_out(console_data, monkeypatch):
    from streams.console import sessions

    monkeypatch.setattr(sessions, "MAX_SESSIONS", 50)  # a test-sized cap
    state = make_state(console_data)
    with _client(state) as olga, _client(state) as anon:
        assert _login(olga, "olga").status_code == 303
        for _ in range(120):
            anon.cookies.clear()
            assert anon.get("/login").status_code == 200
        assert olga.get("/api/status").status_code == 200
        assert len(state.sessions._sessions) == 1  # only olga's: visitors cost nothing


# 5. GET /login with a live session goes home; a cross-site /login replaces no cookie --------------------
def test_login_page_keeps_a_live_session(console_data):
    state = make_state(console_data)
    with _client(state) as c:
        assert _login(c, "olga").status_code == 303
        cookie = c.cookies.get(state.cookie_name)
        r = c.get("/login", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/operator"
        assert state.cookie_name not in r.headers.get("set-cookie", "")
        r = c.get("/login?next=/api/status", follow_redirects=False)
        assert r.headers["location"] == "/api/status"
        # a cross-site link: the SameSite=Strict session cookie is not sent, and the answer must not replace it
        r = c.get("/login", cookies={state.cookie_name: ""}, follow_redirects=False)
        assert r.status_code == 200 and state.cookie_name not in r.headers.get("set-cookie", "")
        assert c.cookies.get(state.cookie_name) == cookie and c.get("/api/status").status_code == 200


def test_next_is_followed_only_on_this_site(console_data):
    state = make_state(console_data)
    with _client(state) as c:
        assert _login(c, "olga", next="/api/status").headers["location"] == "/api/status"
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        with _client(state) as c:
            assert _login(c, "olga", next=target).headers["location"] == "/operator", target


# 6. out-of-range input is a 4xx with the security headers, never a 500 --------------------------------
def test_out_of_range_input_is_a_clear_4xx_with_headers(console_data):
    state = make_state(console_data)
    with _client(state, raise_server_exceptions=False) as alice:
        assert _login(alice, "alice").status_code == 303
        for url in ("/api/meters/M-ALICE/usage?end=0001-01-01", "/api/meters/M-ALICE/usage?end=9999-12-31",
                    "/api/meters/M-ALICE/readings?from=9999-12-01&to=9999-12-31",
                    "/customer/download?from=9999-12-01&to=9999-12-31", "/api/alerts?since=soon",
                    "/api/meters/M-ALICE/usage?period=year", "/no/such/page"):
            r = alice.get(url)
            assert 400 <= r.status_code < 500 and _headers_ok(r), (url, r.status_code, r.text[:200])
            assert "error" in r.text
        r = alice.get("/api/meters/M-ALICE/readings?from=9999-12-01&to=9999-12-31")
        assert r.status_code == 400 and "out of range" in r.json()["error"]
    with _client(state, raise_server_exceptions=False) as olga:
        assert _login(olga, "olga").status_code == 303
        r = olga.get("/operator?kiosk=x", headers=HTML)
        assert r.status_code == 422 and _headers_ok(r) and "kiosk" in r.text
    with _client(state, raise_server_exceptions=False) as anna:
        assert _login(anna, "anna").status_code == 303
        csrf = session_csrf(anna)
        for rho in ("1e-300", "nan", "-1"):
            r = anna.post("/analyst/query", headers=HTML, data={"csrf_token": csrf, "metric": "sum", "by": "region",
                                                                 "from": "2024-03-01", "to": "2024-03-02", "rho": rho})
            assert r.status_code == 400 and _headers_ok(r) and "nothing released" in r.text, (rho, r.status_code)


def test_an_unexpected_error_is_a_500_with_headers(console_data, monkeypatch):
    state = make_state(console_data)
    monkeypatch.setattr(state.vault, "bills", lambda meters: 1 / 0)
    with _client(state, raise_server_exceptions=False) as alice:
        assert _login(alice, "alice").status_code == 303
        r = alice.get("/api/bills")
        assert r.status_code == 500 and _headers_ok(r) and "ZeroDivision" not in r.text


# 7 and 9. OIDC: one client, a capped pending map, the redirect URI from the public URL -----------------
META = {"issuer": "https://idp.example", "authorization_endpoint": "https://idp.example/authorize",
        "token_endpoint": "https://idp.example/token", "jwks_uri": "https://idp.example/jwks"}


def _oidc(console_data, **kwargs):
    from streams.console.oidc import OidcConfig

    config = OidcConfig("https://idp.example", "meterseal-console", "secret", _meta=dict(META))
    for key, value in kwargs.items():
        setattr(config, key, value)
    return make_state(console_data, oidc=config, public_url="https://console.example.org"), config


def test_oidc_redirect_uri_is_the_public_url_not_the_host_header(console_data):
    state, _ = _oidc(console_data)
    with _client(state) as c:
        r = c.get("/login/oidc", headers={"host": "evil.example"}, follow_redirects=False)
        assert r.status_code == 303
        location = httpx.URL(r.headers["location"])
        assert location.params["redirect_uri"] == "https://console.example.org/login/oidc/callback"


def test_oidc_memory_is_bounded(console_data, monkeypatch):
    import tracemalloc

    from streams.console import oidc

    made = []

    class Counted(oidc.OAuth2Client):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(oidc, "OAuth2Client", Counted)
    state, config = _oidc(console_data, max_pending=100)
    with _client(state) as c:
        for _ in range(200):
            c.get("/login/oidc", follow_redirects=False)
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(1800):
            c.cookies.clear()
            assert c.get("/login/oidc", follow_redirects=False).status_code == 303
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        tracemalloc.stop()
    assert len(made) == 1 and config.pending == 100
    assert grown < 8 * 1024 * 1024, f"{grown / 1e6:.1f} MB more after 1,800 more calls"  # unbounded: ~54 MB


# 8. stored text is bounded ---------------------------------------------------------------------------
def test_a_grant_purpose_is_bounded(console_data):
    from streams.share.parties import PartyKey, add_party

    state = make_state(console_data)
    if PARTY not in state.sharing.parties():
        add_party(state.vault.store_dir, PARTY, PartyKey.generate().public_key)
    before = len(state.sharing.all())
    with _client(state) as alice:
        assert _login(alice, "alice").status_code == 303
        csrf = session_csrf(alice)
        form = {"csrf_token": csrf, "party": PARTY, "meter": "M-ALICE", "from": "2024-03-01", "to": "2024-03-02"}
        r = alice.post("/customer/grants", data={**form, "purpose": "x" * 1_000_000}, headers=HTML)
        assert r.status_code == 413 and _headers_ok(r)
        r = alice.post("/customer/grants", data={**form, "purpose": "x" * 501}, headers=HTML)
        assert r.status_code == 400 and "purpose" in r.text
    assert len(state.sharing.all()) == before
    from streams.exceptions import ShareError
    from streams.share.grants import create_grant
    from streams.share.parties import get_party

    with pytest.raises(ShareError, match="purpose"):  # the engine refuses it too (the CLI's path)
        create_grant(state.vault.store, signer=state.vault.signer, index_key=state.vault.index_key,
                     party=get_party(state.vault.store, PARTY), start="2024-03-01", end="2024-03-02",
                     meters=["M-ALICE"], purpose="x" * 501)


# 9. forwarded headers only from trusted proxies; Secure cookies and HSTS with an https public URL --------
def test_a_local_client_cannot_claim_another_address(console_data):
    from streams.console.throttle import Throttle

    state = make_state(console_data, throttle=Throttle(limit=3, window_s=60, address_limit=3))
    served = Served(state)
    try:
        statuses = []
        for i in range(4):
            with httpx.Client(base_url=served.url, timeout=60) as c:
                token = csrf_of(c.get("/login").text)
                statuses.append(c.post("/login", headers={"x-forwarded-for": f"203.0.113.{i}"},
                                       data={"username": f"nobody-{i}", "password": "wrong" * 3,
                                             "csrf_token": token}).status_code)
        assert statuses == [401, 401, 401, 429]  # all four came from 127.0.0.1, whatever they claimed
    finally:
        served.stop()


def test_a_trusted_proxy_names_the_client(console_data):
    from streams.console.proxies import TrustedProxies
    from streams.console.throttle import Throttle

    state = make_state(console_data, throttle=Throttle(limit=3, window_s=60, address_limit=3),
                       proxies=TrustedProxies.parse("127.0.0.1"))
    served = Served(state)
    try:
        statuses = []
        for i in range(4):
            with httpx.Client(base_url=served.url, timeout=60) as c:
                token = csrf_of(c.get("/login").text)
                statuses.append(c.post("/login", headers={"x-forwarded-for": f"203.0.113.{i}"},
                                       data={"username": f"nobody-{i}", "password": "wrong" * 3,
                                             "csrf_token": token}).status_code)
        assert statuses == [401, 401, 401, 401]  # four clients behind the proxy, one failure each
    finally:
        served.stop()


def test_an_https_public_url_means_secure_cookies_and_hsts(console_data):
    state = make_state(console_data, public_url="https://console.example.org")
    with _client(state) as c:  # the console itself sees http (TLS ends at the proxy in front of it)
        page = c.get("/login")
        assert "strict-transport-security" in page.headers and "secure" in page.headers["set-cookie"].lower()
        login_cookie = page.headers["set-cookie"].split(";")[0]  # what the browser sends back over https
        r = c.post("/login", headers={"cookie": login_cookie}, follow_redirects=False,
                   data={"username": "olga", "password": PASSWORD, "csrf_token": csrf_of(page.text)})
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
        session = r.headers["set-cookie"].split(";")[0]
        assert "max-age=31536000" in c.get("/api/status", headers={"cookie": session}).headers["strict-transport-security"]
    with _client(make_state(console_data)) as c:  # plain http on loopback: no HSTS
        assert "strict-transport-security" not in c.get("/login").headers


def test_an_oidc_login_of_a_linked_account_ends_with_the_account(console_data):
    """The real local provider (oidc-provider-mock) on loopback, driven over HTTP as a browser would."""
    from oidc_provider_mock import User, run_server_in_thread

    from streams.console.oidc import OidcConfig

    from .conftest import free_port

    with run_server_in_thread(port=free_port(), user_claims=[User(sub="sso-lina", claims={})]) as idp:
        state = make_state(console_data, oidc=OidcConfig(f"http://localhost:{idp.server_port}", "meterseal-console",
                                                         "client-secret"))
        state.users.add("lina", "operator", subject="sso-lina")
        served = Served(state)
        try:
            with httpx.Client(base_url=served.url, timeout=30) as console, httpx.Client(timeout=30) as provider:
                start = console.get("/login/oidc")
                assert start.status_code == 303
                back = provider.post(start.headers["location"], data={"sub": "sso-lina"})
                assert back.status_code == 302 and back.headers["location"].startswith(served.url + "/login/oidc/callback")
                assert console.get(back.headers["location"]).status_code == 200
                assert console.get("/api/status").status_code == 200
                state.users.set_role("lina", "auditor")  # `meterseal console user role lina --role auditor`
                assert console.get("/api/status").status_code == 401
        finally:
            served.stop()
            state.oidc.close()
            state.users.remove("lina")
