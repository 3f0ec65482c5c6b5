"""The whole flow as a third party and a customer live it: the reference client (requests-oauthlib, which the
server does not use) makes the link with PKCE and listens on its loopback redirect URI; the customer logs in
and clicks Approve in Chromium (Playwright, by role and label); the client exchanges the code, fetches the
subscription, and the feed validates against espi.xsd with the source readings' values to the Wh."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from streams.connect.client import authorize, fetch
from streams.share.espi import parse_feed
from tests.conftest import DATA
from tests.streams.console.conftest import PASSWORD

from .conftest import SCOPE

pytestmark = pytest.mark.browser


def test_requests_oauthlib_client_and_chromium_consent_end_in_a_feed_equal_to_the_source(served_connect, party,
                                                                                      connect_data, browser):
    xmlschema = pytest.importorskip("xmlschema", reason="xmlschema is missing: pip install -e '.[test]'")
    clicked = {}
    context = browser.new_context()  # the run's one Chromium (tests/conftest.py: browser)
    try:
        page = context.new_page()

        def consent_in_browser(link: str) -> None:
            clicked["link"] = link

        # the client thread only records the link; Playwright (not thread-safe) clicks here, in this thread
        import threading

        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(token=authorize(
            client_id=party["client_id"], client_secret=party["secret"],
            authorize_url=f"{served_connect.url}/oauth/authorize", redirect_uri=party["redirect_uri"],
            scope=SCOPE, open_link=consent_in_browser, timeout_s=60)), daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while "link" not in clicked and time.monotonic() < deadline:
            time.sleep(0.02)
        page.goto(clicked["link"])
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Share your energy data with tariff-app?").wait_for()
        assert page.get_by_label("Meter M-A1").is_checked() and page.get_by_label("Meter M-A2").is_checked()
        page.get_by_label("Meter M-A2").uncheck()
        page.get_by_role("button", name="Approve").click()
        page.get_by_text("you can close this window").wait_for()
        worker.join(30)
    finally:
        context.close()

    token = result["token"]
    assert token["token_type"] == "Bearer" and token["resourceURI"].startswith(served_connect.url)
    data, _ = fetch({"client_id": party["client_id"], "client_secret": party["secret"],
                     "token_url": f"{served_connect.url}/oauth/token", "token": token})
    schema = xmlschema.XMLSchema(str(DATA / "vectors" / "greenbutton" / "espi.xsd"))
    assert [str(e) for e in schema.iter_errors(data.decode())] == []
    got = {(r["meter_id"], int(dt.datetime.fromisoformat(r["ts"]).timestamp())): r["wh"] for r in parse_feed(data)}
    now = time.time()
    want = {k: v for k, v in connect_data["source"].items() if k[0] == "M-A1" and k[1] <= now}
    assert got == want and len(got) >= 2 * 96
