"""A small sealed store (three customers' meters, bills, checkpoints) and a console served on a free port."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from streams import capabilities
from streams.console.app import ConsoleState, create_app
from streams.console.data import Vault
from streams.console.engines import Privacy, Sharing, connect_for
from streams.console.feed import AlertHub
from streams.console.server import uvicorn_config
from streams.console.sessions import SessionStore
from streams.console.throttle import Throttle
from streams.console.users import UserStore
from streams.ingest.sources import generated_bills
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore

PASSPHRASE = "console test passphrase"
PASSWORD = "a long test password"
EVIL = "<script>alert(1)</script>"
REGIONS = ("north", "south", f"x{EVIL}")
METERS = {"alice": ["M-ALICE"], "bob": ["M-BOB"], "eve": [f"M-{EVIL}"]}
REGION_OF = {"M-ALICE": "north", "M-BOB": "south", f"M-{EVIL}": f"x{EVIL}"}
PARTY = "tariff-advisor"
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 14))  # readings every hour over these days
ROLE_USERS = {"admin": "root", "operator": "olga", "auditor": "audrey", "analyst": "anna", "customer": "alice"}
SIGNED_METER = "M-ALICE"  # her meter signs its readings (a registered device key); the others do not


def free_port() -> int:
    """A free port in 18000-18999 (the range this work may use)."""
    for port in random.Random().sample(range(18000, 19000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18000-18999")


def _reading(meter: str, ts: dt.datetime, kwh: float, register: float) -> bytes:
    return json.dumps({"meter_id": meter, "ts": ts.isoformat().replace("+00:00", "Z"), "kwh": kwh,
                       "register_kwh": register, "region": REGION_OF[meter], "category": "Domestic"}).encode()


@pytest.fixture(scope="session")
def console_data(tmp_path_factory) -> dict:
    """A data dir whose store holds hourly readings of three meters and two bills each, under signed checkpoints."""
    data = tmp_path_factory.mktemp("console-data")
    keystore = Keystore.init(data, PASSPHRASE)
    keys = keystore.unlock(PASSPHRASE)
    settings = Settings.from_env({}, data_dir=data, regions=REGIONS, max_future_skew_s=1e9)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir),
                        keystore.ledger_signer(PASSPHRASE))
    from streams.devices import signed
    from streams.devices.keys import DeviceKey
    from streams.devices.registry import add_device
    from streams.pipeline import BatchState, MeterStates

    device = DeviceKey.generate("ES256")
    add_device(pipeline.store, signer=keystore.ledger_signer(PASSPHRASE), index_key=keys.index_key,
               meter_id=SIGNED_METER, public_key=device.public_key)
    windows = BatchState(pipeline.windows, {})
    states: dict = {}
    messages, offset = [], 0
    start = dt.datetime.combine(DAYS[0], dt.time(), dt.timezone.utc)
    hours = ((DAYS[1] - DAYS[0]).days + 1) * 24
    for meter_no, meter in enumerate(REGION_OF):
        register = 100.0
        for h in range(hours):
            kwh = round(0.2 + 0.1 * meter_no + (h % 24) / 100, 3)
            register += kwh
            raw = _reading(meter, start + dt.timedelta(hours=h), kwh, register)
            if meter == SIGNED_METER:
                batch = MeterStates(pipeline.states, states)
                (sealed,), = pipeline.seal_messages([signed.sign_reading(json.loads(raw), device, seq=h)],
                                                    [Source("readings.raw", 0, offset)], batch.get, windows=windows)
                batch.update(sealed)
                batch.flush()
            else:
                sealed = pipeline.seal_reading(raw, Source("readings.raw", 0, offset), states)
            messages.append((0, offset, sealed.encode()))
            pipeline.rollups.note(sealed)  # what the seal agent does: the charts read the rollups
            offset += 1
    pipeline.store_batch("readings.sealed", messages)
    pipeline.rollup_tick(force=True)
    bills = generated_bills(6, seed=5)
    owner = []
    for i, (row, meter) in enumerate(zip(bills, [m for m in REGION_OF for _ in range(2)])):
        row["Meter No."] = meter
        owner.append((meter, row["Bill No."]))
        sealed = pipeline.seal_bill(json.dumps(row).encode(), Source("bills.raw", 0, i))
        pipeline.store_batch("bills.sealed", [(0, i, sealed.encode())])
    pipeline.checkpoint_due(force=True)
    from streams.notify import history  # two alerts in the alert history (the notifier keeps it as alerts arrive)

    now_ms = int(time.time() * 1000)
    history.record(pipeline.store, 0, [(i, {
        "format": 1, "alert_id": f"fixture-alert-{i}", "meter_tok": pipeline.index.meter(meter),
        "ts": "2024-03-14T10:00:00+00:00", "kind": kind, "score": 0.97, "severity": "warning",
        "reason": f"reason {EVIL}", "region": REGION_OF[meter], "kwh": None, "ingested_at_ms": None,
        "detected_at_ms": now_ms - 60_000 * i}) for i, (meter, kind) in enumerate([("M-ALICE", "theft"), ("M-BOB", "spike")])])
    users = UserStore.for_data_dir(data)
    for role, name in ROLE_USERS.items():
        users.add(name, role, password=PASSWORD, meters=METERS.get(name, ()))
    users.add("bob", "customer", password=PASSWORD, meters=METERS["bob"])
    users.add("eve", "customer", password=PASSWORD, meters=METERS["eve"])
    return {"dir": data, "settings": settings, "bills": owner, "device": device}


class _Quiet:
    """An alert source with no broker: alerts come only from ``hub.publish`` in the tests."""

    def __call__(self, stop):
        while not stop():
            time.sleep(0.05)
        return iter(())


def make_state(console_data: dict, **overrides) -> ConsoleState:
    settings = console_data["settings"]
    vault = Vault.open(settings.data_dir, PASSPHRASE)
    state = ConsoleState(users=UserStore.for_data_dir(settings.data_dir), sessions=SessionStore(ttl_s=600),
                         throttle=Throttle(limit=3, window_s=60), vault=vault, regions=settings.regions, broker=None,
                         registry=capabilities.registry(), sharing=Sharing(vault),
                         privacy=Privacy.from_settings(vault, settings), connect=connect_for(vault, settings),
                         rollup_min_meters=1)  # one meter per region here
    for k, v in overrides.items():
        setattr(state, k, v)
    return state


class Served:
    def __init__(self, state: ConsoleState) -> None:
        import uvicorn

        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if state.public_url is None:
            state.public_url = self.url
        self.server = uvicorn.Server(uvicorn_config(create_app(state), host="127.0.0.1", port=self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("console did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        if self.state.hub:
            self.state.hub.stop()


@pytest.fixture(scope="session")
def served(console_data):
    hub = AlertHub(_Quiet())
    state = make_state(console_data, hub=hub)
    hub.state = "connected"
    from streams.share.parties import PartyKey, add_party

    add_party(state.vault.store_dir, PARTY, PartyKey.generate().public_key)  # one party a customer may share with
    s = Served(state)
    yield s
    s.stop()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html)[1]


def login(base: str, name: str, password: str = PASSWORD) -> httpx.Client:
    """An httpx client logged in as ``name`` (it keeps the session cookie)."""
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": name, "password": password, "csrf_token": token})
    assert r.status_code == 303, r.text
    return client


def session_csrf(client: httpx.Client) -> str:
    """The CSRF token of the client's session, from its home page."""
    page = client.get("/", headers={"accept": "text/html"}, follow_redirects=True)
    return re.search(r'data-csrf="([^"]+)"', page.text)[1]


SCREENSHOTS = Path(__file__).resolve().parents[3] / "streams" / "console" / "screenshots"


def screenshot(page, name: str) -> Path:
    """A full-page screenshot in streams/console/screenshots/ (the README shows them), or in
    ``METERSEAL_SCREENSHOT_DIR`` when set."""
    shot = Path(os.environ.get("METERSEAL_SCREENSHOT_DIR") or SCREENSHOTS) / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    return shot
