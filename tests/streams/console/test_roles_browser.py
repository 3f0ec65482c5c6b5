"""Each role's main task in Chromium, on demo-like data, with the screenshot the README shows.

The store is built the way ``meterseal demo`` fills it, without the broker: the demo's 5,000 UCI readings of
10 meters, its five bad messages and 200 generated bills are sealed by the worker's ``Pipeline``, which keeps
their rollups; the worker's detector turns the readings into alerts; the demo's share step registers ``demo-recipient`` with a
one-day grant; ``console_accounts`` (what ``demo --console`` runs) makes one account per role and gives the
analyst its budget; ``build_state`` with the demo console's settings is what it serves.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from streams import capabilities
from streams.console.feed import AlertHub
from streams.console.server import build_state

from .conftest import Served, screenshot

pytestmark = pytest.mark.browser
PASSPHRASE = "demo-like console passphrase"
CUSTOMER_METER = "UCI-00000"
WHEN = re.compile(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\b")  # every time the console shows, in UTC


class _NoBroker:
    """The alert feed without a broker: the detector's alerts arrive by ``hub.publish``."""

    def __call__(self, stop):
        while not stop():
            time.sleep(0.05)
        return iter(())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from streams.cli.demo import BAD_READINGS, console_accounts, console_settings
    from streams.ingest import sources
    from streams.ingest.produce import encode_bill, encode_reading
    from streams.keys.keystore import Keystore
    from streams.pipeline import BatchState, Pipeline
    from streams.seal import Sealed, Source
    from streams.settings import Settings
    from streams.share.grants import create_grant
    from streams.share.parties import PartyKey, add_party
    from streams.store.segments import SegmentStore

    data = tmp_path_factory.mktemp("demo-like")
    keystore = Keystore.init(data, PASSPHRASE)
    settings = Settings.from_env({}, data_dir=data)
    for region in settings.regions:
        keystore.add_region(PASSPHRASE, region)
    keys = keystore.unlock(PASSPHRASE)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir),
                        keystore.ledger_signer(PASSPHRASE))
    readings = [encode_reading(r) for r in sources.uci_readings(meters=10, regions=settings.regions, limit=5_000)]
    states, profiles_table, sealed, alerts = {}, {}, [], []
    for offset, raw in enumerate(readings + BAD_READINGS):
        outcome = pipeline.seal_reading(raw, Source("readings.raw", 0, offset), states)
        profiles = BatchState(pipeline.alerting.profiles, profiles_table)
        alerts += [alert for _, alert in pipeline.alerting.observe_many([(outcome, 0, None, None)], profiles)]
        profiles.flush()
        if isinstance(outcome, Sealed):
            sealed.append((0, offset, outcome.encode()))
            pipeline.rollups.note(outcome)  # what the seal agent does: the charts read the rollups
    pipeline.store_batch("readings.sealed", sealed)
    pipeline.rollup_tick(force=True)
    bills = list(sources.generated_bills(200))
    for i, row in enumerate(bills):
        outcome = pipeline.seal_bill(encode_bill(row), Source("bills.raw", 0, i))
        pipeline.store_batch("bills.sealed", [(0, i, outcome.encode())])
    pipeline.checkpoint_due(force=True)
    store = pipeline.store
    party = add_party(store, "demo-recipient", PartyKey.generate().public_key)
    day = dt.date(2006, 12, 16)
    create_grant(store, signer=keystore.ledger_signer(PASSPHRASE), index_key=keys.index_key, party=party,
                 meters=[CUSTOMER_METER], start=day, end=day, purpose="demo: one meter, one day")
    accounts = console_accounts(settings, PASSPHRASE, customer_meters=[CUSTOMER_METER, bills[0]["Meter No."]])
    state = build_state(console_settings(settings), PASSPHRASE, broker=None, registry=capabilities.registry())
    state.hub = AlertHub(_NoBroker())
    state.hub.state = "connected"
    for alert in alerts:
        state.hub.publish(alert)
    days = sorted({json.loads(raw)["ts"][:10] for raw in readings})
    customer_days = sorted({json.loads(raw)["ts"][:10] for raw in readings if json.loads(raw)["meter_id"] == CUSTOMER_METER})
    served = Served(state)
    yield {"served": served, "accounts": accounts, "alerts": alerts, "settings": settings, "first": days[0],
           "last": days[-1], "customer_last": customer_days[-1]}
    served.stop()


@pytest.fixture
def log_in(browser, demo):
    contexts = []

    def as_role(role: str):
        name, password = demo["accounts"][role]
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.goto(demo["served"].url + "/login")
        page.get_by_label("User name").fill(name)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r"/(operator|customer|auditor|analyst|admin)$"))
        return page

    yield as_role
    for context in contexts:
        context.close()


def test_customer_downloads_its_espi_feed(log_in, demo, tmp_path):
    page = log_in("customer")
    form = page.get_by_role("form", name="Download my data")
    assert form.get_by_label("To").input_value() == demo["customer_last"]  # its meter's newest data, not today
    page.locator("#meter-chart[data-rendered='1']").wait_for(timeout=10_000)
    assert f"to {demo['customer_last']}" in page.locator("#meter-chart").inner_text()  # the chart's week, too
    assert not page.locator("#usage-total").inner_text().startswith("0 kWh")
    with page.expect_download() as done:
        form.get_by_role("button", name="Download my data").click()
    path = tmp_path / done.value.suggested_filename
    done.value.save_as(path)
    feed = path.read_text()
    assert path.suffix == ".xml" and feed.count("<espi:IntervalReading>") > 100 and CUSTOMER_METER in feed
    from tests.streams.share.test_espi import GB
    import xmlschema

    assert list(xmlschema.XMLSchema(str(GB / "espi.xsd")).iter_errors(feed)) == []
    assert screenshot(page, "role-customer.png").stat().st_size > 10_000
    assert not page.errors, page.errors


def test_analyst_gets_an_answer(log_in, demo):
    page = log_in("analyst")
    budget = page.get_by_role("table", name="Privacy budget")
    assert "1.0" in budget.get_by_role("row").nth(1).inner_text()  # the demo's budget: rho 1
    first = max(dt.date.fromisoformat(demo["first"]), dt.date.fromisoformat(demo["last"]) - dt.timedelta(days=6))
    assert page.get_by_label("To").input_value() == demo["last"]  # the newest data in the store, not today
    assert page.get_by_label("From").input_value() == first.isoformat()  # a week of it
    page.get_by_label("Metric").select_option("mean")
    page.get_by_role("button", name="Ask").click()
    answer = page.get_by_role("table", name="Answer")
    answer.wait_for()
    rows = answer.get_by_role("row")
    assert rows.count() == 1 + len(demo["settings"].regions)  # a header, then every region
    assert "noise scale" in page.get_by_role("heading", name=re.compile("Answer")).locator("..").inner_text()
    left = float(budget.get_by_role("row").nth(1).get_by_role("cell").nth(3).inner_text())
    assert left == pytest.approx(0.95, abs=1e-6)
    assert screenshot(page, "role-analyst.png").stat().st_size > 10_000
    assert not page.errors, page.errors


def test_auditor_verifies_the_ledger(log_in):
    page = log_in("auditor")
    page.get_by_role("button", name="Run ledger verify").click()
    status = page.get_by_role("status").filter(has_text=re.compile("Ledger verified|TAMPERED|Verify failed"))
    status.wait_for(timeout=60_000)
    result = status.inner_text()
    assert result.startswith("Ledger verified") and WHEN.search(result), result
    consent = page.get_by_role("table", name="Consent log").get_by_role("row").filter(has_text="demo-recipient")
    assert WHEN.search(consent.inner_text())  # a readable UTC time, not an ISO string or epoch seconds
    assert screenshot(page, "role-auditor.png").stat().st_size > 10_000
    assert not page.errors, page.errors


def test_admin_adds_a_user(log_in, demo):
    page = log_in("admin")
    owner_key = page.get_by_role("table", name="Owner keys").get_by_role("row").nth(1).inner_text()
    assert WHEN.search(owner_key) and not re.search(r"\d{10}\.\d", owner_key)  # not 1796583869.0928874
    form = page.get_by_role("form", name="Add an account")
    form.get_by_label("New user name").fill("new-auditor")
    form.get_by_label("Role").select_option("auditor")
    form.get_by_label("Password", exact=True).fill("a brand new password")
    form.get_by_label("Repeat password").fill("a brand new password")
    form.get_by_role("button", name="Add account").click()
    page.get_by_role("status").filter(has_text="Added account new-auditor").wait_for()
    row = page.get_by_role("table", name="Users").get_by_role("row").filter(has_text="new-auditor")
    assert "auditor" in row.inner_text()
    assert demo["served"].state.users.verify("new-auditor", "a brand new password").role == "auditor"
    grants = page.get_by_role("table", name="Grants").get_by_role("row").filter(has_text="demo-recipient")
    assert "active" in grants.inner_text() and grants.get_by_role("button", name=re.compile("Revoke")).count() == 1
    assert screenshot(page, "role-admin.png").stat().st_size > 10_000
    row.get_by_role("button", name="Remove account new-auditor").click()
    page.get_by_role("status").filter(has_text="Removed account new-auditor").wait_for()
    assert demo["served"].state.users.get("new-auditor") is None
    assert not page.errors, page.errors


def test_operator_filters_alerts(log_in, demo):
    kinds = {a["kind"] for a in demo["alerts"]}
    assert len(kinds) >= 2, kinds  # the detector found more than one kind in the demo's readings
    page = log_in("operator")
    page.locator("#alert-rows[data-live='1']").wait_for(state="attached", timeout=10_000)
    table = page.get_by_role("table", name="Live alerts")
    assert table.get_by_role("row").count() == 1 + len(demo["alerts"])
    kind = sorted(kinds)[0]
    page.get_by_role("form", name="Alert filters").get_by_label("Kind").select_option(kind)
    wanted = 1 + sum(a["kind"] == kind for a in demo["alerts"])
    page.wait_for_function("n => document.querySelectorAll('#alert-rows tr').length === n - 1", arg=wanted)
    cells = table.locator("tbody tr td:nth-child(3)").all_inner_texts()
    assert cells and set(cells) == {kind}
    assert all(WHEN.fullmatch(t) for t in table.locator("tbody tr td:nth-child(1)").all_inner_texts())
    page.locator("#region-chart[data-rendered='1']").wait_for(timeout=10_000)
    assert f"to {demo['last']}" in page.locator("#region-chart").inner_text()  # ends at the newest data
    assert not page.locator("#usage-note").inner_text().startswith("0 readings")
    assert screenshot(page, "role-operator.png").stat().st_size > 10_000
    assert not page.errors, page.errors
