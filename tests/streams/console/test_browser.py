"""The console in a real browser: Debian's Chromium driven by Playwright (one browser for the session)."""

from __future__ import annotations

import re
import time

import pytest

from streams.console.feed import AlertHub

from .conftest import EVIL, PASSWORD, Served, make_state, screenshot

pytestmark = pytest.mark.browser

@pytest.fixture
def page_for(browser, served):
    contexts = []

    def open_as(name: str):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d: (page.errors.append("dialog: " + d.message), d.dismiss()))
        page.goto(served.url + "/login")
        page.get_by_label("User name").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r"/(operator|customer|auditor|analyst|admin)"))
        return page

    yield open_as
    for c in contexts:
        c.close()


def test_each_role_lands_on_its_pages(page_for):
    expect_nav = {
        "root": {"Operations", "Alert routing", "Audit", "Analytics", "Federated learning", "Administration",
                 "Alert rules"},
        "olga": {"Operations", "Alert routing", "Federated learning"},
        "audrey": {"Audit"},
        "anna": {"Analytics", "Federated learning"},
        "alice": {"My energy", "My alerts"},
    }
    headings = {"root": "Administration", "olga": "Operations", "audrey": "Audit", "anna": "Analytics", "alice": "My energy"}
    for name, nav in expect_nav.items():
        page = page_for(name)
        assert page.get_by_role("heading", level=1).inner_text() == headings[name]
        links = set(page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts())
        assert links == nav, name
        if name == "anna":
            # the DP engine answers here: the remaining budget is on the page before any query
            assert page.get_by_role("table", name="Privacy budget").is_visible()
            assert page.get_by_role("button", name="Ask").is_visible()
        if name == "alice":  # a page of another role: refused by the server, not just hidden
            page.goto(page.url.replace("/customer", "/admin"))
            assert page.get_by_role("heading", level=1).inner_text() == "403"
        assert not [e for e in page.errors if "403" not in e], page.errors  # no CSP violation, no JS error


def test_customer_chart_renders(page_for):
    page = page_for("alice")
    chart = page.locator("#meter-chart[data-rendered='1'] canvas")
    chart.wait_for(timeout=10_000)
    assert page.locator("#usage-total").inner_text().endswith("kWh)")
    page.get_by_label("Period").select_option("day")
    page.locator("#usage-total").filter(has_text="previous day").wait_for(timeout=10_000)
    assert "previous day" in page.locator("#meter-chart").inner_text()  # the legend
    assert not page.errors, page.errors


def test_operator_sees_an_alert_live_and_script_stays_text(page_for, served):
    page = page_for("olga")
    page.locator("#alert-rows[data-live='1']").wait_for(state="attached", timeout=10_000)
    page.locator("#region-chart[data-rendered='1']").wait_for(timeout=10_000)
    tok = served.state.vault.meter_token("M-ALICE")
    now = int(time.time() * 1000)
    served.state.hub.publish({"format": 1, "alert_id": f"browser-{now}", "meter_tok": tok, "ts": "2024-03-02T10:00:00+00:00",
                              "kind": "theft", "score": 0.99, "severity": "critical", "region": "north",
                              "reason": f"consumption collapsed {EVIL}", "kwh": None, "ingested_at_ms": now,
                              "detected_at_ms": now})
    row = page.get_by_role("row").filter(has_text="consumption collapsed")
    row.wait_for(timeout=5_000)
    assert EVIL in row.inner_text()  # shown as text...
    assert page.locator("#alert-rows script").count() == 0  # ...never as an element
    assert screenshot(page, "console-operator.png").stat().st_size > 10_000  # the README's picture
    assert not [e for e in page.errors if "dialog" in e], page.errors


def test_customer_creates_and_revokes_a_grant(page_for, served):
    page = page_for("alice")
    panel = page.get_by_role("table", name="My data sharing grants")
    rows = panel.get_by_role("row").filter(has_text="tariff-advisor")
    before = rows.count()  # (other tests may have shared with the party already)
    page.get_by_label("Share with").select_option("tariff-advisor")
    page.get_by_label("Purpose").fill("tariff comparison")
    page.get_by_role("button", name="Share", exact=True).click()
    page.wait_for_url(re.compile("/customer"))
    row = rows.nth(before)  # the newest: grants are listed oldest first
    assert rows.count() == before + 1 and "active" in row.inner_text()
    row.get_by_role("button", name=re.compile("Revoke grant")).click()
    page.wait_for_url(re.compile("/customer"))
    row = rows.nth(before)
    assert "revoked" in row.inner_text()
    assert row.get_by_role("button").count() == 0  # a revoked grant cannot be revoked again
    # the auditor sees both events in the consent log, as leaves
    audrey = page_for("audrey")
    log = audrey.get_by_role("table", name="Consent log").get_by_role("row").filter(has_text="tariff-advisor").last
    assert "revoked" in log.inner_text() and "leaf" in log.inner_text()
    assert not page.errors, page.errors


@pytest.mark.broker
def test_alert_on_the_embedded_broker_appears_live(browser, console_data):
    """The real path: an Alert record produced on the broker's alerts topic, read by the console's feed."""
    import schemas
    from streams.console.server import alert_source
    from streams.ingest.broker import EmbeddedBroker, Producer, ensure_topics

    from .conftest import free_port

    with EmbeddedBroker(port=free_port()) as broker:
        ensure_topics(broker.bootstrap, 2)
        state = make_state(console_data)
        state.hub = AlertHub(alert_source(broker.bootstrap)).start()
        served = Served(state)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(served.url + "/login")
            page.get_by_label("User name").fill("olga")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.locator("#alert-rows[data-live='1']").wait_for(state="attached", timeout=15_000)
            now = int(time.time() * 1000)
            alert = {"format": 1, "alert_id": f"broker-{now}", "meter_tok": "t" * 32, "ts": "2024-03-02T10:00:00+00:00",
                     "kind": "flatline", "score": 1.0, "severity": "warning", "reason": "stuck at one value for 20 readings",
                     "region": "south", "kwh": None, "ingested_at_ms": now, "detected_at_ms": now}
            producer = Producer(broker.bootstrap)
            producer.send("alerts", schemas.encode("alert", alert), key=alert["meter_tok"].encode())
            producer.close()
            page.get_by_role("row").filter(has_text="stuck at one value").wait_for(timeout=10_000)
            context.close()
        finally:
            served.stop()


def test_oidc_login_against_a_real_local_provider(browser, console_data):
    """oidc-provider-mock (a real OIDC provider, Authlib-based) on loopback; the role comes from a claim."""
    from oidc_provider_mock import User, run_server_in_thread

    from streams.console.oidc import OidcConfig

    from .conftest import free_port

    users = [User(sub="ops-7", claims={"meterseal_role": "operator"}), User(sub="nobody-1", claims={})]
    with run_server_in_thread(port=free_port(), user_claims=users) as idp:
        issuer = f"http://localhost:{idp.server_port}"
        state = make_state(console_data, oidc=OidcConfig(issuer, "meterseal-console", "client-secret"))
        served = Served(state)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(served.url + "/login")
            page.get_by_role("link", name="Log in with your organisation's account").click()
            page.get_by_role("button", name="ops-7").click()
            page.wait_for_url(re.compile("/operator$"))
            assert page.get_by_role("heading", level=1).inner_text() == "Operations"
            assert "oidc:ops-7 (operator)" in page.locator("header").inner_text()
            page.goto(served.url + "/admin")
            assert page.get_by_role("heading", level=1).inner_text() == "403"
            context.close()
            context = browser.new_context()  # a subject without a role claim and no linked account: refused
            page = context.new_page()
            page.goto(served.url + "/login")
            page.get_by_role("link", name="Log in with your organisation's account").click()
            page.get_by_role("button", name="nobody-1").click()
            assert page.get_by_role("heading", level=1).inner_text() == "403"
            assert "no meterseal role" in page.get_by_role("alert").inner_text()
            context.close()
        finally:
            served.stop()


def test_an_operator_silences_an_alert_group_and_acknowledges_an_alert(page_for, served):
    page = page_for("olga")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Alert routing").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Alert routing"
    history = page.get_by_role("table", name="Alert history")
    assert history.get_by_role("row").count() >= 3  # the header and the two alerts of the fixture
    form = page.get_by_role("form", name="New silence")
    form.get_by_label("Matchers").fill("region=north\nkind=theft")
    form.get_by_label("Duration").fill("2h")
    form.get_by_label("Reason").fill("crew replacing the north feeder")
    form.get_by_role("button", name="Silence").click()
    page.wait_for_url(re.compile(r"notice=silence-made"))
    active = page.get_by_role("table", name="Active silences")
    assert "crew replacing the north feeder" in active.inner_text() and "olga" in active.inner_text()
    page.get_by_role("button", name=re.compile(r"^Acknowledge theft alert")).first.click()
    page.wait_for_url(re.compile(r"notice=acknowledged"))
    assert "by olga" in page.get_by_role("table", name="Alert history").inner_text()
    page.get_by_role("button", name="End silence region=north, kind=theft").click()
    page.wait_for_url(re.compile(r"notice=silence-ended"))
    assert "No active silence" in page.get_by_role("table", name="Active silences").inner_text()
    # a silence that matches nothing is made, with a warning
    form = page.get_by_role("form", name="New silence")
    form.get_by_label("Matchers").fill("region=atlantis")
    form.get_by_label("Reason").fill("typo")
    form.get_by_role("button", name="Silence").click()
    assert "matches none of the alerts" in page.get_by_role("status").first.inner_text()
    screenshot(page, "console-alert-routing.png")
    assert not page.errors, page.errors
